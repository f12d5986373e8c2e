"""Staff manage the catalogue and see orders in the admin."""

from __future__ import annotations

from django.test import Client

from payments.models import Order, Price, Product
from tests.factories import PriceFactory, UserFactory


def staff_client() -> Client:
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_staff_create_a_product_with_features_and_prices(db) -> None:  # type: ignore[no-untyped-def]
    client = staff_client()
    assert client.get("/admin/payments/product/add/").status_code == 200
    resp = client.post(
        "/admin/payments/product/add/",
        {
            "code": "premium-plus",
            "name": "Premium Plus",
            "description": "",
            "features": ["videochat.filters"],
            "active": "on",
            "prices-TOTAL_FORMS": "1",
            "prices-INITIAL_FORMS": "0",
            "prices-MIN_NUM_FORMS": "0",
            "prices-MAX_NUM_FORMS": "1000",
            "prices-0-kind": "subscription",
            "prices-0-amount_minor": "999",
            "prices-0-currency": "EUR",
            "prices-0-interval": "year",
            "prices-0-duration_days": "",
            "prices-0-active": "on",
            "prices-0-stripe_price_id": "",
            "prices-0-google_product_id": "premium_plus_yearly",
        },
    )
    assert resp.status_code == 302, resp.content.decode()[:2000]
    product = Product.objects.get(code="premium-plus")
    assert product.features == ["videochat.filters"]
    price = Price.objects.get(product=product)
    assert (price.kind, price.amount_minor, price.interval) == ("subscription", 999, "year")


def test_staff_see_orders_with_the_payment_fields(db) -> None:  # type: ignore[no-untyped-def]
    order = Order.objects.create(
        user=UserFactory(),
        price=PriceFactory(),
        provider="paypal",
        status="paid",
        amount_minor=599,
        currency="EUR",
        transaction_id="CAP123",
        payer_email="payer@example.com",
        payer_country="NL",
    )
    client = staff_client()
    listing = client.get("/admin/payments/order/").content.decode()
    assert "payer@example.com" in listing and "NL" in listing
    detail = client.get(f"/admin/payments/order/{order.pk}/change/").content.decode()
    assert "CAP123" in detail
    assert client.get("/admin/payments/order/add/").status_code == 403
    assert client.get("/admin/payments/entitlement/").status_code == 200
    assert client.get("/admin/payments/providerevent/").status_code == 200


def test_staff_grant_change_and_delete_of_an_entitlement_go_through_the_service(
    db, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    """A staff grant is announced to the user's open sockets (video chat's paid filters turn
    on at once), as is a revocation or a deletion: the admin never writes behind the service."""
    import datetime as dt

    from django.utils import timezone

    from payments.keys import entitlements_group
    from payments.models import Entitlement
    from realtime.events import capture_events
    from tests.factories import ProductFactory

    client = staff_client()
    user = UserFactory()
    product = ProductFactory(features=["videochat.filters"])
    until = timezone.now() + dt.timedelta(days=30)
    form = {
        "user": user.pk,
        "product": product.pk,
        "valid_until_0": until.strftime("%Y-%m-%d"),
        "valid_until_1": until.strftime("%H:%M:%S"),
        "source": "staff",
        "order": "",
        "revoked_at_0": "",
        "revoked_at_1": "",
        "revoke_reason": "",
    }
    with capture_events() as events, django_capture_on_commit_callbacks(execute=True):
        resp = client.post("/admin/payments/entitlement/add/", form)
    assert resp.status_code == 302, resp.content.decode()[:2000]
    granted = Entitlement.objects.get(user=user)
    assert events == [
        (
            entitlements_group(user.pk),
            {"type": "payments.entitlements", "features": ["videochat.filters"]},
        )
    ]
    now = timezone.now()
    form |= {"revoked_at_0": now.strftime("%Y-%m-%d"), "revoked_at_1": now.strftime("%H:%M:%S")}
    with capture_events() as events, django_capture_on_commit_callbacks(execute=True):
        client.post(f"/admin/payments/entitlement/{granted.pk}/change/", form)
    assert events == [
        (entitlements_group(user.pk), {"type": "payments.entitlements", "features": []})
    ]
    with capture_events() as events, django_capture_on_commit_callbacks(execute=True):
        client.post(f"/admin/payments/entitlement/{granted.pk}/delete/", {"post": "yes"})
    assert not Entitlement.objects.filter(pk=granted.pk).exists()
    assert events == [
        (entitlements_group(user.pk), {"type": "payments.entitlements", "features": []})
    ]
