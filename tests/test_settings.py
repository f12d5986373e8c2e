"""Production settings: refuse to start without secrets; pass Django's deploy checks."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROD_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
    "DATABASE_URL": "postgres://app@db.internal:5432/app",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "DJANGO_ALLOWED_HOSTS": "chat.example.com",
}


def run_manage(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in PROD_ENV and k != "REDIS_KEY_PREFIX"}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_deploy_check_passes_under_production_settings():
    result = run_manage(PROD_ENV, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_each_secret():
    for missing in ("DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DJANGO_ALLOWED_HOSTS"):
        env = {k: v for k, v in PROD_ENV.items() if k != missing}
        result = run_manage(env, "check")
        assert result.returncode != 0, missing
        assert "ImproperlyConfigured" in result.stderr and missing in result.stderr


def test_production_refuses_a_short_secret_key():
    result = run_manage({**PROD_ENV, "DJANGO_SECRET_KEY": "short"}, "check")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


PAYMENTS_ENV = {
    "PAYMENT_PROVIDERS": "stripe,paypal,google_play",
    "STRIPE_SECRET_KEY": "sk_live_x",
    "STRIPE_WEBHOOK_SECRET": "whsec_x",
    "PAYPAL_CLIENT_ID": "id",
    "PAYPAL_CLIENT_SECRET": "secret",
    "PAYPAL_WEBHOOK_ID": "WH-1",
    "GOOGLE_PLAY_PACKAGE_NAME": "com.example.chat",
    "GOOGLE_PLAY_SERVICE_ACCOUNT_FILE": "/etc/comms/play.json",
    "GOOGLE_PUBSUB_AUDIENCE": "https://chat.example.com/premium/webhooks/google-play/",
    "GOOGLE_PUBSUB_SERVICE_ACCOUNT": "rtdn@example.iam.gserviceaccount.com",
}


def test_production_starts_with_every_payment_credential():
    result = run_manage({**PROD_ENV, **PAYMENTS_ENV}, "check")
    assert result.returncode == 0, result.stderr


def test_production_refuses_a_payment_provider_missing_a_credential():
    for missing in PAYMENTS_ENV:
        if missing == "PAYMENT_PROVIDERS":
            continue
        env = {k: v for k, v in {**PROD_ENV, **PAYMENTS_ENV}.items() if k != missing}
        result = run_manage(env, "check")
        assert result.returncode != 0, missing
        assert "ImproperlyConfigured" in result.stderr and missing in result.stderr


def test_production_refuses_a_half_configured_provider_and_the_test_stand_in():
    # Not listed in PAYMENT_PROVIDERS, but a credential is set: the rest are required.
    result = run_manage({**PROD_ENV, "STRIPE_SECRET_KEY": "sk_live_x"}, "check")
    assert result.returncode != 0 and "STRIPE_WEBHOOK_SECRET" in result.stderr
    result = run_manage({**PROD_ENV, "PAYMENT_PROVIDERS": "bitcoin"}, "check")
    assert result.returncode != 0 and "unknown provider" in result.stderr
    stand_in = {**PROD_ENV, **PAYMENTS_ENV, "STRIPE_API_BASE": "http://127.0.0.1:9"}
    result = run_manage(stand_in, "check")
    assert result.returncode != 0 and "STRIPE_API_BASE" in result.stderr


def test_production_security_contact_is_the_sites_mailbox_never_a_placeholder():
    """security.txt must name a mailbox someone reads: the configured one, else security@
    the site's own host (RFC 2142), never the development placeholder."""
    show = "from django.conf import settings; print(settings.SECURITY_CONTACT_EMAIL)"
    result = run_manage(PROD_ENV, "shell", "-c", show)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "security@chat.example.com"
    result = run_manage(
        {**PROD_ENV, "SECURITY_CONTACT_EMAIL": "psirt@example.org"}, "shell", "-c", show
    )
    assert result.stdout.strip().splitlines()[-1] == "psirt@example.org"
    result = run_manage({**PROD_ENV, "SECURITY_CONTACT_EMAIL": "security@localhost"}, "check")
    assert result.returncode != 0 and "SECURITY_CONTACT_EMAIL" in result.stderr
