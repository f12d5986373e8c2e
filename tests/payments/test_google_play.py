"""Google Play: real-time developer notifications by Pub/Sub push, the OIDC token verified
by google-auth, the purchase fetched with google-api-python-client before anything is
granted, then acknowledged. Google's HTTP is answered at the transports."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from payments import selectors
from payments.models import Entitlement, Order, OrderStatus, ProviderEvent
from payments.providers.google_play_api import account_id_for
from tests.factories import PriceFactory, SubscriptionPriceFactory
from tests.payments import google_fake as g

FEATURE = "videochat.filters"
WEBHOOK = "/premium/webhooks/google-play/"


def push(body: bytes, token: str) -> int:
    return (
        Client()
        .post(
            WEBHOOK,
            data=body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        .status_code
    )


def sub_note(token: str, kind: int = 4) -> dict:  # type: ignore[type-arg]
    # 4 SUBSCRIPTION_PURCHASED, 2 RENEWED, 3 CANCELED, 13 EXPIRED, 12 REVOKED
    return {
        "subscriptionNotification": {
            "version": "1.0",
            "notificationType": kind,
            "purchaseToken": token,
            "subscriptionId": "premium_monthly",
        }
    }


def product_note(token: str) -> dict:  # type: ignore[type-arg]
    return {
        "oneTimeProductNotification": {
            "version": "1.0",
            "notificationType": 1,
            "purchaseToken": token,
            "sku": "premium_30_days",
        }
    }


@pytest.fixture
def prices(db):  # type: ignore[no-untyped-def]
    sub = SubscriptionPriceFactory(google_product_id="premium_monthly")
    one = PriceFactory(product=sub.product, google_product_id="premium_30_days")
    return sub, one


def test_a_subscription_notification_grants_after_asking_google_and_acknowledges(  # type: ignore[no-untyped-def]
    make_user, google, prices
) -> None:
    user = make_user()
    google.api.subscribe("tok-sub-1", account_id=account_id_for(user.pk))
    assert push(g.push_body(sub_note("tok-sub-1")), g.oidc_token(google.signer)) == 200
    order = Order.objects.get(purchase_token="tok-sub-1")
    assert order.user_id == user.pk and order.status == OrderStatus.PAID and order.renews
    assert order.provider_order_id == "GPA.3333-4444-5555-66666"
    assert order.product_id == "premium_monthly" and order.payer_country == "BR"
    assert order.paid_until is not None
    assert selectors.has_entitlement(user_id=user.pk, feature=FEATURE)
    assert google.api.acknowledged == ["tok-sub-1"]
    assert any("subscriptionsv2/tokens/tok-sub-1" in uri for _, uri in google.api.calls)


def test_a_one_time_purchase_grants_its_pass(make_user, google, prices) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    google.api.buy("tok-one-1", account_id=account_id_for(user.pk))
    assert push(g.push_body(product_note("tok-one-1")), g.oidc_token(google.signer)) == 200
    order = Order.objects.get(purchase_token="tok-one-1")
    assert order.status == OrderStatus.PAID and order.transaction_id.startswith("GPA.")
    assert selectors.has_entitlement(user_id=user.pk, feature=FEATURE)
    assert google.api.acknowledged == ["tok-one-1"]


@pytest.mark.parametrize(
    "tamper",
    [
        "body",
        "signature",
        "audience",
        "service_account",
        "stale",
        "expired",
        "no_token",
        "other_app",
    ],
)
def test_a_push_that_is_not_googles_is_refused_and_changes_nothing(  # type: ignore[no-untyped-def]
    make_user, google, prices, tamper
) -> None:
    user = make_user()
    google.api.subscribe("tok-x", account_id=account_id_for(user.pk))
    body = g.push_body(sub_note("tok-x"))
    token = g.oidc_token(google.signer)
    now = int(time.time())
    if tamper == "body":
        body = body[:-3] + b"!!}"  # not the JSON Pub/Sub sends
    elif tamper == "signature":
        token = g.oidc_token(g.rsa_key())
    elif tamper == "audience":
        token = g.oidc_token(google.signer, aud="https://elsewhere.example.com/")
    elif tamper == "service_account":
        token = g.oidc_token(google.signer, email="intruder@example.iam.gserviceaccount.com")
    elif tamper == "stale":
        token = g.oidc_token(google.signer, iat=now - 1800, exp=now + 1800)
    elif tamper == "expired":
        token = g.oidc_token(google.signer, iat=now - 7200, exp=now - 3600)
    elif tamper == "no_token":
        token = ""
    elif tamper == "other_app":
        import base64
        import json

        env = json.loads(body)
        note = json.loads(base64.b64decode(env["message"]["data"]))
        note["packageName"] = "com.someone.else"
        env["message"]["data"] = base64.b64encode(json.dumps(note).encode()).decode()
        body = json.dumps(env).encode()
    assert push(body, token) == 400
    assert not ProviderEvent.objects.exists()
    assert not Order.objects.exists() and not Entitlement.objects.exists()
    assert not google.api.calls  # nothing asked of Google for a refused push


def test_the_same_message_twice_grants_once(make_user, google, prices) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    google.api.subscribe("tok-2", account_id=account_id_for(user.pk))
    body = g.push_body(sub_note("tok-2"), message_id="77")
    assert push(body, g.oidc_token(google.signer)) == 200
    asked = len(google.api.calls)
    assert push(body, g.oidc_token(google.signer)) == 200  # Pub/Sub redelivers
    assert ProviderEvent.objects.count() == 1 and Order.objects.count() == 1
    assert Entitlement.objects.filter(user=user).count() == 1
    assert len(google.api.calls) == asked


def test_notifications_out_of_order_end_in_googles_state(make_user, google, prices) -> None:  # type: ignore[no-untyped-def]
    """EXPIRED is delivered before PURCHASED: both ask Google, which says expired."""
    user = make_user()
    google.api.subscribe(
        "tok-3", account_id=account_id_for(user.pk), state="SUBSCRIPTION_STATE_EXPIRED"
    )
    assert (
        push(g.push_body(sub_note("tok-3", 13), message_id="m-exp"), g.oidc_token(google.signer))
        == 200
    )
    assert (
        push(g.push_body(sub_note("tok-3", 4), message_id="m-buy"), g.oidc_token(google.signer))
        == 200
    )
    order = Order.objects.get(purchase_token="tok-3")
    assert order.status == OrderStatus.EXPIRED
    assert not selectors.has_entitlement(user_id=user.pk, feature=FEATURE)
    assert google.api.acknowledged == []  # nothing granted, nothing acknowledged


def test_a_voided_purchase_revokes(make_user, google, prices) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    google.api.buy("tok-4", account_id=account_id_for(user.pk))
    push(g.push_body(product_note("tok-4"), message_id="m1"), g.oidc_token(google.signer))
    assert selectors.has_entitlement(user_id=user.pk, feature=FEATURE)
    google.api.products[("premium_30_days", "tok-4")]["purchaseState"] = 1  # refunded
    voided = {
        "voidedPurchaseNotification": {
            "purchaseToken": "tok-4",
            "orderId": "GPA.1111",
            "productType": 2,
            "refundType": 1,
        }
    }
    assert push(g.push_body(voided, message_id="m2"), g.oidc_token(google.signer)) == 200
    order = Order.objects.get(purchase_token="tok-4")
    assert order.status == OrderStatus.VOIDED
    assert not selectors.has_entitlement(user_id=user.pk, feature=FEATURE)


def test_a_purchase_naming_no_account_of_ours_grants_nothing(make_user, google, prices) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    google.api.subscribe("tok-5", account_id=f"{user.pk}.forged0000000000000000000000000")
    assert push(g.push_body(sub_note("tok-5")), g.oidc_token(google.signer)) == 200
    order = Order.objects.get(purchase_token="tok-5")
    assert order.user_id is None  # kept for accounting
    assert not selectors.has_entitlement(user_id=user.pk, feature=FEATURE)


def test_the_android_app_gets_its_account_id(make_user, google) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    client = Client()
    client.force_login(user)
    got = client.get("/premium/google-play/account/").json()
    assert got == {"obfuscated_account_id": account_id_for(user.pk), "package_name": g.PACKAGE}
    assert Client().get("/premium/google-play/account/").status_code == 302


def test_staff_refund_goes_through_google_and_revokes(make_user, google, prices) -> None:  # type: ignore[no-untyped-def]
    from payments import services

    user = make_user()
    google.api.buy("tok-6", account_id=account_id_for(user.pk))
    push(g.push_body(product_note("tok-6"), message_id="r1"), g.oidc_token(google.signer))
    order = Order.objects.get(purchase_token="tok-6")
    services.order_refund(order_id=order.pk)
    assert google.api.refunded == [("GPA.1111-2222-3333-44444", True)]
    order.refresh_from_db()
    assert order.status == OrderStatus.REFUNDED
    assert not selectors.has_entitlement(user_id=user.pk, feature=FEATURE)
