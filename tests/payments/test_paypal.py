"""PayPal: Orders v2 checkout and webhooks verified offline (CRC32 of the raw body, signed
SHA256withRSA, certificate from PayPal's host, chained to a trusted root and in date), with
PayPal's HTTP answered at the transport."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.test import Client

from payments import selectors, services
from payments.models import Entitlement, Order, OrderStatus, ProviderEvent
from tests.factories import PriceFactory
from tests.payments.paypal_fake import CERT_URL, make_ca, make_leaf, pem, signed_headers

FEATURE = "videochat.filters"
WEBHOOK = "/premium/webhooks/paypal/"


def logged_in(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def start(user, paypal) -> Order:  # type: ignore[no-untyped-def]
    resp = logged_in(user).post(
        "/premium/checkout/", {"price": PriceFactory(amount_minor=599).pk, "provider": "paypal"}
    )
    order = Order.objects.get(user=user)
    assert resp.status_code == 302
    assert resp["Location"] == f"https://www.paypal.com/checkoutnow?token={order.checkout_id}"
    return order


def event(kind: str, resource: dict, *, event_id: str = "WH-EVT-1") -> bytes:  # type: ignore[type-arg]
    return json.dumps(
        {
            "id": event_id,
            "event_type": kind,
            "resource_type": "checkout-order",
            "create_time": "2026-11-29T19:00:00Z",
            "resource": resource,
        }
    ).encode()


def deliver(body: bytes, headers: dict[str, str]) -> int:
    return Client().post(WEBHOOK, data=body, content_type="application/json", **headers).status_code


def approved_event(order: Order, **kw) -> bytes:  # type: ignore[no-untyped-def]
    return event("CHECKOUT.ORDER.APPROVED", {"id": order.checkout_id, "status": "APPROVED"}, **kw)


def test_checkout_creates_a_paypal_order_for_ours(make_user, paypal) -> None:  # type: ignore[no-untyped-def]
    order = start(make_user(), paypal)
    sent = paypal.orders[order.checkout_id]["request"]
    unit = sent["purchase_units"][0]
    assert unit["custom_id"] == str(order.pk)
    assert unit["amount"] == {"currency_code": "EUR", "value": "5.99"}
    assert sent["intent"] == "CAPTURE"
    ctx = sent["payment_source"]["paypal"]["experience_context"]
    assert ctx["return_url"].endswith("/premium/paypal/return/")


def test_return_from_paypal_captures_and_grants(make_user, paypal) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    order = start(user, paypal)
    paypal.approve(order.checkout_id)
    resp = logged_in(user).get(f"/premium/paypal/return/?token={order.checkout_id}")
    assert resp.status_code == 302 and resp["Location"] == "/premium/purchases/"
    order.refresh_from_db()
    assert order.status == OrderStatus.PAID
    assert selectors.has_entitlement(user_id=user.pk, feature=FEATURE)


def test_a_valid_event_grants_with_the_order_fields(make_user, paypal) -> None:  # type: ignore[no-untyped-def]
    """The buyer approved and closed the tab: the webhook's task captures and grants."""
    user = make_user()
    order = start(user, paypal)
    paypal.approve(order.checkout_id, email="pat@example.nl")
    body = approved_event(order)
    assert deliver(body, signed_headers(body, paypal.key)) == 200
    order.refresh_from_db()
    assert order.status == OrderStatus.PAID
    assert order.transaction_id == paypal.capture_of(order.checkout_id)["id"]
    assert order.provider_order_id == order.checkout_id
    assert (order.payer_id, order.payer_email, order.payer_name, order.payer_country) == (
        "PAYER123",
        "pat@example.nl",
        "Pat Payer",
        "NL",
    )
    assert (order.amount_minor, order.currency) == (599, "EUR")
    assert selectors.has_entitlement(user_id=user.pk, feature=FEATURE)


def _other_ca_leaf():  # type: ignore[no-untyped-def]
    ca_key, ca = make_ca()
    return make_leaf(ca_key, ca)


@pytest.mark.parametrize(
    "tamper",
    [
        "body",
        "signature",
        "foreign_cert_url",
        "http_cert_url",
        "untrusted_cert",
        "expired_cert",
        "wrong_subject",
        "stale",
        "webhook_id",
    ],
)
def test_a_delivery_that_is_not_paypals_is_refused_and_changes_nothing(  # type: ignore[no-untyped-def]
    make_user, paypal, tamper
) -> None:
    user = make_user()
    order = start(user, paypal)
    paypal.approve(order.checkout_id)
    body = approved_event(order)
    key = paypal.key
    kw: dict = {}
    if tamper == "signature":
        key = _other_ca_leaf()[0]
    elif tamper == "foreign_cert_url":
        kw["cert_url"] = "https://evil.example.com/v1/notifications/certs/CERT-1"
    elif tamper == "http_cert_url":
        kw["cert_url"] = CERT_URL.replace("https://", "http://")
    elif tamper in ("untrusted_cert", "expired_cert", "wrong_subject"):
        ca_key, ca = paypal.ca
        if tamper == "untrusted_cert":
            key, cert = _other_ca_leaf()
        elif tamper == "expired_cert":
            key, cert = make_leaf(ca_key, ca, expired=True)
        else:
            key, cert = make_leaf(ca_key, ca, subject="evil.example.com")
        paypal.cert_chain = pem(cert)
    elif tamper == "stale":
        kw["when"] = dt.datetime.now(tz=dt.UTC) - dt.timedelta(hours=1)
    elif tamper == "webhook_id":
        kw["webhook_id"] = "WH-SOMEONE-ELSES"
    headers = signed_headers(body, key, **kw)
    if tamper == "body":
        body = body.replace(b"APPROVED", b"APPROVEX", 1)
    assert deliver(body, headers) == 400
    assert not ProviderEvent.objects.exists()
    assert not Entitlement.objects.exists()
    order.refresh_from_db()
    assert order.status == OrderStatus.PENDING
    # A certificate URL that is not PayPal's is never fetched.
    assert not any("evil" in url or url.startswith("http://") for _, url in paypal.calls)


def test_the_same_event_twice_grants_once_and_the_certificate_is_cached(make_user, paypal) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    order = start(user, paypal)
    paypal.approve(order.checkout_id)
    body = approved_event(order)
    assert deliver(body, signed_headers(body, paypal.key)) == 200
    assert deliver(body, signed_headers(body, paypal.key, transmission_id="retry-2")) == 200
    assert ProviderEvent.objects.count() == 1
    assert Entitlement.objects.filter(user=user).count() == 1
    assert [u for _, u in paypal.calls].count(CERT_URL) == 1
    captures = [u for m, u in paypal.calls if u.endswith("/capture")]
    assert len(captures) == 1


def test_events_out_of_order_end_refunded(make_user, paypal) -> None:  # type: ignore[no-untyped-def]
    """Captured, then refunded at PayPal; the refund's event arrives first."""
    user = make_user()
    order = start(user, paypal)
    paypal.approve(order.checkout_id)
    logged_in(user).get(f"/premium/paypal/return/?token={order.checkout_id}")
    assert selectors.has_entitlement(user_id=user.pk, feature=FEATURE)
    capture = paypal.capture_of(order.checkout_id)
    paypal.set_capture(order.checkout_id, "REFUNDED")
    refunded = event(
        "PAYMENT.CAPTURE.REFUNDED",
        {
            "id": "RF1",
            "status": "COMPLETED",
            "links": [
                {
                    "rel": "up",
                    "href": f"https://api.paypal.com/v2/payments/captures/{capture['id']}",
                }
            ],
        },
        event_id="WH-REFUND",
    )
    completed = event(
        "PAYMENT.CAPTURE.COMPLETED",
        {
            "id": capture["id"],
            "status": "COMPLETED",
            "supplementary_data": {"related_ids": {"order_id": order.checkout_id}},
        },
        event_id="WH-CAPTURE",
    )
    assert deliver(refunded, signed_headers(refunded, paypal.key)) == 200
    assert deliver(completed, signed_headers(completed, paypal.key)) == 200
    order.refresh_from_db()
    assert order.status == OrderStatus.REFUNDED
    assert not selectors.has_entitlement(user_id=user.pk, feature=FEATURE)


def test_staff_refund_goes_through_paypal_and_revokes(make_user, paypal) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    order = start(user, paypal)
    paypal.approve(order.checkout_id)
    logged_in(user).get(f"/premium/paypal/return/?token={order.checkout_id}")
    services.order_refund(order_id=order.pk)
    assert paypal.capture_of(order.checkout_id)["status"] == "REFUNDED"
    order.refresh_from_db()
    assert order.status == OrderStatus.REFUNDED
    assert not selectors.has_entitlement(user_id=user.pk, feature=FEATURE)


def test_paypal_is_not_offered_for_subscriptions(make_user, paypal) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import SubscriptionPriceFactory

    sub = SubscriptionPriceFactory()
    PriceFactory(product=sub.product)
    client = logged_in(make_user())
    page = client.get("/premium/").content.decode()
    sub_block = page.split(f'data-price-id="{sub.pk}"')[1].split("</li>")[0]
    assert 'data-testid="pay-paypal"' not in sub_block and 'data-testid="pay-stripe"' not in page
    assert 'data-testid="pay-paypal"' in page  # for the one-off pass
    resp = client.post("/premium/checkout/", {"price": sub.pk, "provider": "paypal"})
    assert resp.status_code == 302 and not Order.objects.exists()
