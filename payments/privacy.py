"""Payments' privacy step: what it deletes and exports of one user (accounts/privacy).

Entitlements go with the account. Orders are kept, unlinked from the account: they are the
accounting record of a sale (tax law keeps invoices and payment records for years, and a
refund or chargeback may come after the account is gone), with the payer details the
provider reported, as the Video Chat policy allows for legal obligations, until
PAYMENTS_RECORD_RETENTION_YEARS after the sale (services.records_purge, a beat task)."""

from __future__ import annotations

from django.db.models.fields.files import FieldFile

from accounts.privacy import registry

from .models import Entitlement, Order


def user_data_delete(*, user_id: int) -> list[FieldFile]:
    Entitlement.objects.filter(user_id=user_id).delete()
    Order.objects.filter(user_id=user_id).update(user=None, renews=False)
    return []


def user_data_export(*, user_id: int) -> registry.ExportPart:
    part = registry.ExportPart()
    orders = Order.objects.filter(user_id=user_id).select_related("price__product")
    part.collections["orders"] = [
        {
            "product": o.price.product.name,
            "provider": o.provider,
            "status": o.status,
            "transaction_id": o.transaction_id,
            "purchase_token": o.purchase_token,
            "order_id": o.provider_order_id,
            "product_id": o.product_id,
            "price": f"{o.amount_minor / 100:.2f} {o.currency}",
            "order_date": o.ordered_at,
            "paid_until": o.paid_until,
            "renews": o.renews,
            "payer_id": o.payer_id,
            "payer_email": o.payer_email,
            "payer_name": o.payer_name,
            "payer_country": o.payer_country,
        }
        for o in orders.order_by("pk")
    ]
    part.collections["entitlements"] = [
        {
            "product": e.product.name,
            "valid_until": e.valid_until,
            "source": e.source,
            "revoked_at": e.revoked_at,
            "revoke_reason": e.revoke_reason,
        }
        for e in Entitlement.objects.filter(user_id=user_id).select_related("product")
    ]
    return part


def register() -> None:
    registry.register(
        app="payments",
        title="Payments",
        delete=user_data_delete,
        export=user_data_export,
        deletes=("payments.Entitlement.user", "payments.Order.user"),
        exports=("payments.Entitlement.user", "payments.Order.user"),
    )
