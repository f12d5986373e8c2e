"""Privacy rights in a real browser against a real daphne process and a real Celery worker:
the "what we hold" page, an export whose progress the page follows until its link appears,
the archive downloaded; the contact form refusing a disguised file."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.db import connection
from playwright.sync_api import expect

from tests.conftest import ROOT
from tests.e2e.conftest import login
from tests.factories import UserFactory

pytestmark = pytest.mark.e2e


def start_worker() -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DJANGO_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }
    log = open(ROOT / "var" / "e2e-celery-worker.log", "wb")  # noqa: SIM115
    cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-l", "info"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_export_progress_then_download_in_a_browser(asgi_servers, new_context):
    server = asgi_servers({"CELERY_TASK_ALWAYS_EAGER": "0"})
    user = UserFactory(email="porter@example.com")
    page = login(new_context(), server, user)

    page.goto(f"{server.url}/privacy/my-data/")
    expect(page.locator("[data-collection=devices]")).to_be_visible()
    expect(page.locator("body")).to_contain_text("porter@example.com")
    page.get_by_test_id("export-request").click()
    # No worker yet: the export waits, and the page says so with a progress bar.
    status = page.get_by_test_id("export-status")
    expect(status).to_contain_text("Waiting to start")
    expect(status.locator("progress")).to_be_visible()

    worker = start_worker()
    try:
        # The page polls: the link appears without a reload once the worker has built it.
        link = page.get_by_test_id("export-download")
        expect(link).to_be_visible(timeout=60_000)
        expect(status).to_contain_text("Ready to download")
        expect(status.locator("progress")).to_be_hidden()
        with page.expect_download() as download_info:
            link.click()
        archive = zipfile.ZipFile(io.BytesIO(Path(download_info.value.path()).read_bytes()))
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["schema_version"] == 1 and manifest["user_id"] == user.pk
    account = json.loads(archive.read("accounts.json"))["collections"]["account"][0]
    assert account["email"] == "porter@example.com"


def test_contact_form_refuses_a_disguised_file_in_a_browser(live_asgi, new_context, tmp_path):
    page = new_context().new_page()
    page.goto(f"{live_asgi.url}/contact/")
    fake = tmp_path / "holiday.png"
    fake.write_bytes(b"<?php echo 'pwned'; ?>")
    page.fill("input[name=name]", "Ann")
    page.fill("input[name=email]", "ann@example.com")
    page.fill("textarea[name=message]", "See the picture.")
    page.set_input_files("input[name=attachments]", str(fake))
    page.click("[data-testid=contact-form] button[type=submit]")
    expect(page.locator("[data-field=attachments]")).to_contain_text(
        "holiday.png is not a PNG file: its content is text/plain."
    )
    # The rest of what was typed is still there.
    expect(page.locator("textarea[name=message]")).to_have_value("See the picture.")
