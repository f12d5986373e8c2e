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


@pytest.fixture
def paypal(settings, tmp_path):  # type: ignore[no-untyped-def]
    """PayPal answered at the transport of the adapter's HTTP session; its webhook
    certificate chains to a root CA this test makes and trusts."""
    from requests.adapters import HTTPAdapter

    from payments.providers import paypal_api
    from tests.payments.paypal_fake import WEBHOOK_ID, PayPalFake, make_ca, make_leaf, pem

    ca_key, ca = make_ca()
    leaf_key, leaf = make_leaf(ca_key, ca)
    roots = tmp_path / "roots.pem"
    roots.write_bytes(pem(ca))
    settings.PAYPAL_CLIENT_ID = "client-id-test"
    settings.PAYPAL_CLIENT_SECRET = "client-secret-test"
    settings.PAYPAL_WEBHOOK_ID = WEBHOOK_ID
    settings.PAYPAL_SANDBOX = False
    settings.PAYPAL_CERT_CA_BUNDLE = str(roots)
    fake = PayPalFake(cert_chain=pem(leaf))
    fake.key = leaf_key  # type: ignore[attr-defined]
    fake.ca = (ca_key, ca)  # type: ignore[attr-defined]
    paypal_api._certs.clear()
    paypal_api._token = None
    paypal_api.http.mount("https://", fake)
    yield fake
    paypal_api.http.mount("https://", HTTPAdapter())
    paypal_api._certs.clear()
    paypal_api._token = None


@pytest.fixture
def google(settings, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """Google Play: the push token's signing certificates and the Android Publisher API,
    answered at the transports the adapter's clients use."""
    import json
    from types import SimpleNamespace

    from requests.adapters import HTTPAdapter

    from payments.providers import google_play_api
    from tests.payments import google_fake as g

    signer = g.rsa_key()
    sa_key = g.rsa_key()
    sa_file = tmp_path / "play-service-account.json"
    sa_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "example-project",
                "private_key_id": "sa-key-1",
                "private_key": g.key_pem(sa_key),
                "client_email": "play-api@example-project.iam.gserviceaccount.com",
                "client_id": "42",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    settings.GOOGLE_PLAY_PACKAGE_NAME = g.PACKAGE
    settings.GOOGLE_PLAY_SERVICE_ACCOUNT_FILE = str(sa_file)
    settings.GOOGLE_PUBSUB_AUDIENCE = g.AUDIENCE
    settings.GOOGLE_PUBSUB_SERVICE_ACCOUNT = g.PUSHER
    certs = g.CertsAdapter({"kid-1": g.self_signed(signer)})
    google_play_api.certs_http.mount("https://", certs)
    api = g.PlayApi()
    monkeypatch.setattr(google_play_api, "api_http_factory", api)
    yield SimpleNamespace(signer=signer, certs=certs, api=api)
    google_play_api.certs_http.mount("https://", HTTPAdapter())
