"""Test settings. Real PostgreSQL and Redis when DATABASE_URL / REDIS_URL are set (CI), else
SQLite and the embedded Redis. Each test run gets its own Redis key prefix and database name,
passed to the server processes that tests start through the environment."""

import os
import uuid

# setdefault: the value lands in os.environ, so the daphne subprocesses a test starts agree.
RUN_ID = os.environ.setdefault("TEST_RUN_ID", uuid.uuid4().hex[:8])
# Without REDIS_URL: this run's own embedded Redis, started and stopped by the test session.
os.environ.setdefault("DJANGO_EMBEDDED_REDIS", f"test-{RUN_ID}")

from .base import *  # noqa: E402, F403
from .base import BASE_DIR, DATABASES, env  # noqa: E402

DEBUG = False
SECRET_KEY = "test-only-not-secret"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# The nginx test stack turns it off: static files come from nginx there.
SERVE_STATIC = env.bool("DJANGO_SERVE_STATIC", default=True)
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
MEDIA_ROOT = str(BASE_DIR / "var" / f"test-media-{RUN_ID}")
PRIVACY_EXPORT_ROOT = str(BASE_DIR / "var" / f"test-exports-{RUN_ID}")

REDIS_KEY_PREFIX = os.environ.setdefault("REDIS_KEY_PREFIX", f"t{RUN_ID}:")
from .base import CACHES, CELERY_BROKER_TRANSPORT_OPTIONS, CHANNEL_LAYERS  # noqa: E402

CACHES["default"]["KEY_PREFIX"] = REDIS_KEY_PREFIX + "cache"
CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = REDIS_KEY_PREFIX + "asgi"
CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = REDIS_KEY_PREFIX + "celery:"
# A browser test may run a real worker instead (CELERY_TASK_ALWAYS_EAGER=0 for its server).
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
# The test process imports the ASGI app too: keep CPython's own collection schedule there.
ASGI_GC_FULL_SECONDS = env.float("ASGI_GC_FULL_SECONDS", default=0.0)

# A server process started by a test connects straight to the test database.
_test_db = env("DJANGO_TEST_DB_NAME", default="")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-{RUN_ID}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_comms_{RUN_ID}"}
if _test_db:
    DATABASES["default"]["NAME"] = _test_db
# Servers here run on any loopback port (the nginx test stack too): the page's own origin.
WS_ALLOW_SERVED_ORIGIN = True
