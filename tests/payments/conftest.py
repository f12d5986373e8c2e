from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.payments.stripe_stub import SECRET_KEY, WEBHOOK_SECRET, StripeStub, serve


@pytest.fixture
def stripe_stub(settings) -> Iterator[StripeStub]:  # type: ignore[no-untyped-def]
    """Stripe's API, served locally; the production SDK path talks to it over HTTP."""
    stub, httpd = serve()
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = stub.url
    yield stub
    httpd.shutdown()
    httpd.server_close()
