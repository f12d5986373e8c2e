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
