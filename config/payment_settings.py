"""Which environment variables each payment provider needs; production.py refuses to start
when a provider in use lacks one (README "Payments")."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

PROVIDER_VARIABLES = {
    "stripe": ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"),
    "paypal": ("PAYPAL_CLIENT_ID", "PAYPAL_CLIENT_SECRET", "PAYPAL_WEBHOOK_ID"),
    "google_play": (
        "GOOGLE_PLAY_PACKAGE_NAME",
        "GOOGLE_PLAY_SERVICE_ACCOUNT_FILE",
        "GOOGLE_PUBSUB_AUDIENCE",
        "GOOGLE_PUBSUB_SERVICE_ACCOUNT",
    ),
}
# Variables that point a provider at a stand-in: tests only.
TEST_ONLY_VARIABLES = ("STRIPE_API_BASE",)


def check_payment_environment(listed: list[str]) -> None:
    """A provider is in use when PAYMENT_PROVIDERS names it or any of its variables is set;
    then every one of its variables must be set."""
    unknown = set(listed) - set(PROVIDER_VARIABLES)
    if unknown:
        raise ImproperlyConfigured(f"PAYMENT_PROVIDERS: unknown provider(s) {sorted(unknown)}")
    for provider, names in PROVIDER_VARIABLES.items():
        given = [n for n in names if os.environ.get(n)]
        if provider in listed or given:
            missing = [n for n in names if not os.environ.get(n)]
            if missing:
                raise ImproperlyConfigured(
                    f"payments: {provider} is in use but {', '.join(missing)} is not set"
                )
    for name in TEST_ONLY_VARIABLES:
        if os.environ.get(name):
            raise ImproperlyConfigured(f"{name} points a provider at a stand-in: tests only")
