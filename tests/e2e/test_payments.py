"""Buying Premium in a real browser: the video chat page's Premium hint opens the plans page,
"Pay" starts Stripe Checkout (Stripe's API is a local stand-in the live server talks to over
HTTP, so the production SDK path runs), Stripe's signed webhook confirms the payment, and the
video chat page, still open, unlocks its filters without a reload. A refund locks them again."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from payments.models import Order
from tests.e2e.conftest import login, off_loop
from tests.factories import PriceFactory
from tests.payments.stripe_stub import SECRET_KEY, WEBHOOK_SECRET, StripeStub, serve

pytestmark = pytest.mark.e2e


@pytest.fixture
def stripe(settings) -> Iterator[StripeStub]:  # type: ignore[no-untyped-def]
    stub, httpd = serve()
    # The test process refunds like staff would (through the same adapter).
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = stub.url
    yield stub
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server(asgi_servers: Callable[..., Any], stripe: StripeStub) -> Any:
    return asgi_servers(
        {
            "STRIPE_SECRET_KEY": SECRET_KEY,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": stripe.url,
        }
    )


def post_webhook(server, stripe: StripeStub, event: dict) -> int:  # type: ignore[no-untyped-def]
    body = json.dumps(event).encode()
    req = urllib.request.Request(
        f"{server.url}/premium/webhooks/stripe/",
        data=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": stripe.sign(body)},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


def test_premium_bought_with_stripe_unlocks_video_chat_filters_without_reload(  # type: ignore[no-untyped-def]
    server, stripe, make_user, new_context
) -> None:
    from payments import services

    price = PriceFactory(amount_minor=599, currency="EUR", duration_days=30)
    user = make_user()
    page = login(new_context(viewport={"width": 1366, "height": 860}), server, user)
    page.goto(f"{server.url}/videochat/")
    page.wait_for_selector("[data-testid=start]:enabled", timeout=15000)
    assert page.is_disabled("[data-testid=want-gender]")
    assert page.is_visible("text=Gender and country filters come with Premium")

    # The hint opens the plans page in a new tab; the video chat page stays as it is.
    with page.context.expect_page() as opened:
        page.click("[data-testid=premium-link]")
    plans = opened.value
    plans.wait_for_load_state()
    assert plans.url == f"{server.url}/premium/"
    offer = plans.locator(f"[data-price-id='{price.pk}']")
    assert "5.99 EUR" in offer.inner_text()

    # Pay: the browser is sent to Stripe Checkout for this order.
    offer.locator("[data-testid=pay-stripe]").click()
    plans.wait_for_selector("[data-testid=stripe-checkout]")
    order = Order.objects.get(user=user)
    assert plans.url == f"{stripe.url}/pay/{order.checkout_id}"
    assert order.status == "pending"

    # The buyer pays at Stripe; Stripe calls our webhook. (The video chat page's entitlement
    # socket is live once the server has sent it the first state.)
    page.wait_for_selector("[data-videochat][data-entitlements-live=true]", state="attached")
    stripe.pay(order.checkout_id, email=user.email, name="Pat Payer", country="DE")
    completed = stripe.event(
        "checkout.session.completed", {"id": order.checkout_id, "object": "checkout.session"}
    )
    assert post_webhook(server, stripe, completed) == 200

    # The video chat page unlocks without a reload.
    page.wait_for_selector("[data-testid=want-gender]:enabled", timeout=10000)
    assert page.is_enabled("[data-testid=want-country]")
    assert not page.is_visible("text=Gender and country filters come with Premium")
    assert page.evaluate("document.querySelector('[data-videochat]').dataset.filtersAllowed") == (
        "true"
    )

    # Stripe sends the buyer back to the purchases page, which lists the plan.
    plans.goto(f"{server.url}/premium/purchases/?checkout=done")
    row = plans.locator(f"[data-testid=purchase][data-order-id='{order.pk}']")
    assert row.get_attribute("data-status") == "paid"
    assert "Premium" in row.inner_text() and "valid until" in row.inner_text()

    # A refund by staff locks the filters again, on the open page too.
    off_loop(services.order_refund, order_id=order.pk)
    page.wait_for_selector("[data-testid=want-gender]:disabled", timeout=10000)
    assert page.is_visible("text=Gender and country filters come with Premium")
    plans.reload()
    assert row.get_attribute("data-status") == "refunded"
