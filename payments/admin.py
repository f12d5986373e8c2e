"""What staff see and do: the catalogue, orders (with refund through the provider),
entitlements (grant by hand) and the provider events received."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from realtime.errors import ServiceError

from . import services
from .models import Entitlement, Feature, Order, OrderStatus, Price, Product, ProviderEvent


class ProductForm(forms.ModelForm):  # type: ignore[type-arg]
    features = forms.MultipleChoiceField(
        choices=Feature.choices, widget=forms.CheckboxSelectMultiple, required=False
    )

    class Meta:
        model = Product
        fields = ["code", "name", "description", "features", "active"]


class PriceInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Price
    extra = 0
    fields = [
        "kind",
        "amount_minor",
        "currency",
        "interval",
        "duration_days",
        "active",
        "stripe_price_id",
        "google_product_id",
    ]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = ProductForm
    list_display = ["name", "code", "features", "active"]
    inlines = [PriceInline]


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "__str__",
        "user",
        "price",
        "status",
        "ordered_at",
        "paid_until",
        "renews",
        "payer_email",
        "payer_country",
    ]
    list_filter = ["provider", "status"]
    search_fields = [
        "user__email",
        "payer_email",
        "transaction_id",
        "provider_order_id",
        "checkout_id",
        "subscription_id",
    ]
    raw_id_fields = ["user"]
    actions = ["refund"]
    readonly_fields = [f.name for f in Order._meta.get_fields() if f.concrete and f.name != "id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # orders come from checkouts and provider notifications

    @admin.action(description="Refund through the provider (revokes the entitlement)")
    def refund(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        for order in queryset.filter(status=OrderStatus.PAID):
            try:
                services.order_refund(order_id=order.pk)
            except ServiceError as exc:
                self.message_user(request, f"{order}: {exc.detail}", messages.ERROR)
            else:
                self.message_user(request, f"{order}: refunded", messages.SUCCESS)


@admin.register(Entitlement)
class EntitlementAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["user", "product", "valid_until", "source", "revoked_at", "created_at"]
    list_filter = ["product", "source"]
    search_fields = ["user__email"]
    raw_id_fields = ["user", "order"]

    # Staff writes go through the services, which tell the user's sockets.
    def save_model(self, request: HttpRequest, obj: Entitlement, form: Any, change: bool) -> None:
        services.entitlement_staff_save(entitlement=obj)

    def delete_model(self, request: HttpRequest, obj: Entitlement) -> None:
        services.entitlement_staff_delete(entitlement=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Entitlement]) -> None:
        for entitlement in queryset:
            services.entitlement_staff_delete(entitlement=entitlement)


@admin.register(ProviderEvent)
class ProviderEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["provider", "kind", "event_id", "occurred_at", "received_at", "processed_at"]
    list_filter = ["provider", "kind"]
    search_fields = ["event_id"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
