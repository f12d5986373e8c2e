"""Catalogue (products and prices), orders, entitlements and provider events.

An entitlement is (user, product, valid until, source): a product grants its features for as
long as one of the user's entitlements to it is in force. Orders keep the payment data the
Video Chat policy lists (transaction id, purchase token, order id, product id, price, order
date, payer id, e-mail, name and country). Provider events are stored once per (provider,
event id): that row is what makes a webhook delivered twice apply once.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Feature(models.TextChoices):
    VIDEOCHAT_FILTERS = "videochat.filters", "Video chat: gender and country filters"


class Provider(models.TextChoices):
    STRIPE = "stripe", "Stripe"
    PAYPAL = "paypal", "PayPal"
    GOOGLE_PLAY = "google_play", "Google Play"
    STAFF = "staff", "Staff"


class Product(models.Model):
    """What is sold: a name and the features it unlocks."""

    code = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    # Feature codes (Feature); a list so that one product can bundle several features.
    features = models.JSONField(default=list)
    active = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.name


class PriceKind(models.TextChoices):
    ONE_OFF = "one_off", "One-off payment"
    SUBSCRIPTION = "subscription", "Subscription"


class Interval(models.TextChoices):
    MONTH = "month", "Monthly"
    YEAR = "year", "Yearly"


class Price(models.Model):
    """One way to buy a product: a one-off pass for `duration_days`, or a subscription
    renewed every `interval`."""

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="prices")
    kind = models.CharField(max_length=16, choices=PriceKind.choices)
    amount_minor = models.PositiveIntegerField(help_text="In the currency's minor unit (cents).")
    currency = models.CharField(max_length=3, default="EUR")
    interval = models.CharField(max_length=8, choices=Interval.choices, blank=True)
    duration_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="One-off: how long the features last."
    )
    active = models.BooleanField(default=True)
    # The same price as each provider knows it (optional for Stripe and PayPal one-off
    # payments, which are sent with the amount; required for Google Play).
    stripe_price_id = models.CharField(max_length=100, blank=True)
    google_product_id = models.CharField(max_length=100, blank=True, db_index=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                name="price_subscription_has_interval",
                condition=~models.Q(kind="subscription") | ~models.Q(interval=""),
            ),
            models.CheckConstraint(
                name="price_one_off_has_duration",
                condition=~models.Q(kind="one_off") | models.Q(duration_days__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product.name}: {self.label}"

    @property
    def label(self) -> str:
        amount = f"{self.amount_minor / 100:.2f} {self.currency}"
        if self.kind == PriceKind.SUBSCRIPTION:
            return f"{amount} / {self.interval}"
        return f"{amount} for {self.duration_days} days"


class OrderStatus(models.TextChoices):
    PENDING = "pending", "Waiting for payment"
    PAID = "paid", "Paid"
    REFUNDED = "refunded", "Refunded"
    CHARGEBACK = "chargeback", "Charged back"
    VOIDED = "voided", "Voided"
    EXPIRED = "expired", "Expired"
    CANCELED = "canceled", "Canceled before payment"
    FAILED = "failed", "Payment failed"


class Order(models.Model):
    """One purchase through one provider. The payer fields are what the provider reported;
    the accounting record is kept after the account is deleted (with the user detached)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="orders"
    )
    price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="orders")
    provider = models.CharField(max_length=16, choices=Provider.choices)
    status = models.CharField(
        max_length=16, choices=OrderStatus.choices, default=OrderStatus.PENDING
    )
    # The provider's checkout object (Stripe Checkout Session, PayPal order, Play token).
    checkout_id = models.CharField(max_length=255, blank=True)
    subscription_id = models.CharField(max_length=255, blank=True)
    renews = models.BooleanField(default=False)
    paid_until = models.DateTimeField(null=True, blank=True)
    # Payment data the policy lists.
    transaction_id = models.CharField(max_length=255, blank=True)
    purchase_token = models.CharField(max_length=512, blank=True)
    provider_order_id = models.CharField("order id", max_length=255, blank=True)
    product_id = models.CharField(max_length=100, blank=True)
    amount_minor = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    ordered_at = models.DateTimeField(default=timezone.now)
    payer_id = models.CharField(max_length=255, blank=True)
    payer_email = models.CharField(max_length=254, blank=True)
    payer_name = models.CharField(max_length=255, blank=True)
    payer_country = models.CharField(max_length=2, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["provider", "checkout_id"]),
            models.Index(fields=["provider", "subscription_id"]),
            models.Index(fields=["provider", "transaction_id"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "purchase_token"],
                condition=~models.Q(purchase_token=""),
                name="order_unique_purchase_token",
            )
        ]

    def __str__(self) -> str:
        return f"Order {self.pk} ({self.get_provider_display()}, {self.get_status_display()})"


class Entitlement(models.Model):
    """The user may use the product's features until `valid_until` (None: no end), unless
    revoked. Granted by an order or by staff."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="entitlements"
    )
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="entitlements")
    valid_until = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=Provider.choices, default=Provider.STAFF)
    order = models.OneToOneField(
        Order, on_delete=models.CASCADE, null=True, blank=True, related_name="entitlement"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoke_reason = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["user", "product"])]

    def __str__(self) -> str:
        return f"{self.product} for user {self.user_id}"


class ProviderEvent(models.Model):
    """A verified webhook delivery, stored once per (provider, event id); the Celery task
    marks it processed in the same transaction as the change it makes."""

    provider = models.CharField(max_length=16, choices=Provider.choices)
    event_id = models.CharField(max_length=255)
    kind = models.CharField(max_length=100)
    # The object to refetch (checkout session, capture, purchase token...), never the
    # event's own claims about its state.
    object_ref = models.JSONField(default=dict)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="provider_event_unique")
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.kind} {self.event_id}"
