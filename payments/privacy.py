"""Payments' privacy step: what it deletes and exports of one user (accounts/privacy)."""

from __future__ import annotations

from django.db.models.fields.files import FieldFile

from accounts.privacy import registry

from .models import Entitlement


def user_data_delete(*, user_id: int) -> list[FieldFile]:
    Entitlement.objects.filter(user_id=user_id).delete()
    return []


def user_data_export(*, user_id: int) -> registry.ExportPart:
    part = registry.ExportPart()
    part.collections["entitlements"] = [
        {
            "feature": e.feature,
            "valid_until": e.valid_until,
            "source": e.source,
            "created_at": e.created_at,
        }
        for e in Entitlement.objects.filter(user_id=user_id).order_by("pk")
    ]
    return part


def register() -> None:
    registry.register(
        app="payments",
        title="Payments",
        delete=user_data_delete,
        export=user_data_export,
        deletes=("payments.Entitlement.user",),
        exports=("payments.Entitlement.user",),
    )
