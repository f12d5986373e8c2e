"""No side effects at import, safe defaults: loading the settings starts no Redis; an unset
DJANGO_SETTINGS_MODULE means production (which refuses to start without its secrets), never
DEBUG; and no redis-server is left behind by `make lint`'s checks, a test run or stopping
`make run`."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from config import embedded_redis
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any settings choice or server address."""
    drop = {
        "DJANGO_SETTINGS_MODULE",
        "REDIS_URL",
        "DATABASE_URL",
        "DJANGO_SECRET_KEY",
        "DJANGO_EMBEDDED_REDIS",
        "REDIS_KEY_PREFIX",
        "TEST_RUN_ID",
        "DJANGO_TEST_DB_NAME",
        "TEST_SHARD",  # tests/split_run.py's: the child run would deselect its own test
    }
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def redis_pids(name: str) -> list[int]:
    """Live redis-server processes of the embedded server `name` (by its pid file: Redis
    rewrites its own command line, so the socket path cannot be looked for there)."""
    pid_file = embedded_redis.VAR_DIR / f"redis-{name}.pid"
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return []
    return [pid] if b"redis-server" in cmdline else []


@pytest.fixture
def probe_name():  # type: ignore[no-untyped-def]
    name = f"probe-{secrets.token_hex(4)}"
    yield name
    embedded_redis.stop(name)  # in case a test failed with it running


def test_loading_settings_and_running_checks_starts_no_redis(probe_name):
    env = clean_env(
        DJANGO_SETTINGS_MODULE="config.settings.local", DJANGO_EMBEDDED_REDIS=probe_name
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert redis_pids(probe_name) == []
    assert not Path(embedded_redis.url(probe_name).removeprefix("unix://")).exists()


@pytest.mark.parametrize(
    "code",
    [
        "import runpy, sys; sys.argv = ['manage.py', 'check'];"
        " runpy.run_path('manage.py', run_name='__main__')",
        "import config.asgi",
        "import config.celery_app, django; from django.conf import settings; settings.DEBUG",
    ],
)
def test_an_unset_settings_module_means_production_not_debug(code):
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_procfile_sets_no_settings_module():
    assert "DJANGO_SETTINGS_MODULE" not in (ROOT / "Procfile").read_text()


def test_stopping_make_run_leaves_no_redis(probe_name, tmp_path):
    port = free_port()
    env = clean_env(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DJANGO_EMBEDDED_REDIS=probe_name,
        DJANGO_SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        PORT=str(port),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "config.run_local"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # answering, whatever it says
            except OSError:
                assert proc.poll() is None, "make run exited early"
                assert time.monotonic() < deadline, "make run did not start"
                time.sleep(0.2)  # startup poll: nothing to wait on but the port
        assert redis_pids(probe_name), "make run did not start its Redis"
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert redis_pids(probe_name) == []


def test_a_test_run_without_redis_url_stops_its_redis():
    """`make test` on a machine without REDIS_URL: the session starts its own embedded Redis
    (the autouse key-cleaning fixture needs it to pass) and stops it at the end."""
    run_id = secrets.token_hex(4)
    env = clean_env(TEST_RUN_ID=run_id)
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "tests/test_architecture.py::test_make_lint_runs_the_import_contracts",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert redis_pids(f"test-{run_id}") == []
    assert not (embedded_redis.VAR_DIR / f"redis-test-{run_id}.sock").exists()


def test_uvicorn_is_started_with_a_frame_size_limit_everywhere():
    """uvicorn's default --ws-max-size is 16 MiB: every place that starts it sets ours."""
    readme = (ROOT / "README.md").read_text()
    commands = [(ROOT / "Procfile").read_text().split("web:", 1)[1].splitlines()[0]]
    start = readme.index("uvicorn --host")
    commands.append(readme[start : readme.index("config.asgi:application", start)])
    for command in commands:
        assert "--ws-max-size 65536" in command, command
