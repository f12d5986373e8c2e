"""The headers a page carries (what `check --deploy` and the Mozilla Observatory look for)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.test import Client

from tests.conftest import ROOT


@pytest.mark.django_db
def test_pages_carry_a_strict_policy_and_the_usual_headers() -> None:
    resp = Client().get("/accounts/login/")
    assert resp.status_code == 200
    csp = {
        part.strip().split(" ", 1)[0]: part.strip().split(" ", 1)[1:]
        for part in resp["Content-Security-Policy"].split(";")
        if part.strip()
    }
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self' 'wasm-unsafe-eval'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert "unsafe-inline" not in resp["Content-Security-Policy"]
    assert resp["X-Frame-Options"] == "DENY"
    assert resp["X-Content-Type-Options"] == "nosniff"
    assert resp["Referrer-Policy"] == "same-origin"
    assert resp["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "geolocation=(self)" in resp["Permissions-Policy"]


@pytest.mark.django_db
def test_csp_reports_are_accepted_and_bad_ones_refused() -> None:
    client = Client()
    report = {
        "csp-report": {
            "document-uri": "http://127.0.0.1/cbline/?secret=1",
            "violated-directive": "script-src-elem",
            "blocked-uri": "inline",
        }
    }
    sent = client.post("/csp-report/", json.dumps(report), content_type="application/csp-report")
    assert sent.status_code == 204
    assert (
        client.post("/csp-report/", "not json", content_type="application/json").status_code == 400
    )
    big = {"csp-report": {"blocked-uri": "x" * 10_000}}
    assert client.post("/csp-report/", big, content_type="application/json").status_code == 413
    assert client.get("/csp-report/").status_code == 405


def test_check_deploy_is_clean_with_production_settings() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": "k" * 20 + "Zq8#v!pL2@xR5&nT7^mW9*yB4$cF6(hJ1)",
        "DJANGO_ALLOWED_HOSTS": "chat.example.com",
        "DATABASE_URL": os.environ.get("DATABASE_URL") or "postgres://u:p@127.0.0.1:5432/db",
        "REDIS_URL": os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
    }
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no issues" in out.stdout
