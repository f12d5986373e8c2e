"""Settings shared by every environment. Everything that differs between machines is read
from the environment (django-environ); see README "Production environment"."""

from __future__ import annotations

import mimetypes
from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config import embedded_redis
from config.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# Not "daphne": its app only swaps in its runserver, and imports Twisted and installs its
# reactor in every process (a fifth of a uvicorn worker's start). `make run` starts daphne.
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.facebook",
    "allauth.socialaccount.providers.vk",
    "allauth.socialaccount.providers.twitter_oauth2",
    "realtime",
    "accounts",
    "voice",
    "videochat",
    "messaging",
    "payments",
    "axes",
    "csp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "config.security.PermissionsPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.DeviceMiddleware",
    "accounts.privacy.cookies.PrivacyCookiesMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# The Bot API's own stack (config/token_asgi.py): its requests carry a bearer token, so
# none of the session, CSRF, device or cookie middleware; the same response headers and
# host check as the site's. Async-capable only: a waiting long poll costs no thread.
TOKEN_API_MIDDLEWARE = [
    m
    for m in MIDDLEWARE
    if m
    in {
        "django.middleware.security.SecurityMiddleware",
        "csp.middleware.CSPMiddleware",
        "config.security.PermissionsPolicyMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    }
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Threads (each with its own connection) that a socket's independent database calls run on
# (realtime.dbpool); Channels' database_sync_to_async runs every call of a process on one.
DB_POOL_THREADS = env.int("DB_POOL_THREADS", default=4)
# Seconds such a thread keeps one connection before handing it back to the pool.
DB_POOL_KEEP_SECONDS = env.float("DB_POOL_KEEP_SECONDS", default=60.0)

# --- Database: PostgreSQL from DATABASE_URL, else SQLite in WAL mode in the project folder.
if env("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
    # A pool per process (psycopg's, through Django): ASGI runs every HTTP request in a
    # thread of its own, so a per-thread persistent connection (CONN_MAX_AGE) was never
    # reused, and idle ones piled up to "too many clients". Pooled connections go back to
    # the pool when Django closes them; a pool needs CONN_MAX_AGE 0. Size: the sockets'
    # database threads plus the requests in flight; processes x max_size must stay under
    # the server's max_connections.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DJANGO_DB_POOL_MIN_SIZE", default=1),
        "max_size": env.int("DJANGO_DB_POOL_MAX_SIZE", default=8),
        # Seconds a caller waits for a free connection before an error (not for ever).
        "timeout": env.float("DJANGO_DB_POOL_TIMEOUT", default=10.0),
        # Idle connections above min_size are closed after this many seconds.
        "max_idle": env.float("DJANGO_DB_POOL_MAX_IDLE", default=60.0),
        # The pool retries a failed connect with a doubling delay until this many seconds,
        # then gives up and the next request tries afresh: without a short limit, a database
        # back after 30 s of outage was not used again for as long.
        "reconnect_timeout": env.float("DJANGO_DB_POOL_RECONNECT_TIMEOUT", default=4.0),
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            # DJANGO_SQLITE_PATH: a throwaway file for benchmarks (benchmarks/_common.py).
            "NAME": env("DJANGO_SQLITE_PATH", default=str(BASE_DIR / "var" / "db.sqlite3")),
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# --- Redis: one server for the channel layer, Celery, live state and rate limits.
REDIS_URL = env("REDIS_URL", default="")
# Production sets DJANGO_REQUIRE_REDIS_URL (see production.py) and refuses to start without it.
if not REDIS_URL and not env.bool("DJANGO_REQUIRE_REDIS_URL", default=False):
    # Only named here: `make run` and the test session start it (config/embedded_redis.py).
    REDIS_URL = embedded_redis.url(env("DJANGO_EMBEDDED_REDIS", default="dev"))
# Every key this project writes starts with this prefix (realtime.keys); the test run sets
# its own so that runs sharing one Redis never see each other's keys.
REDIS_KEY_PREFIX = env("REDIS_KEY_PREFIX", default="cp:")
# redis-py caps a pool at 100 connections by default; a mass disconnect needs more.
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", default=2000)
# When they are all in use a command waits this long for one to be free (then fails with
# ConnectionError) instead of failing at once: a storm queues (realtime/redis.py).
REDIS_POOL_TIMEOUT_SECONDS = env.float("REDIS_POOL_TIMEOUT_SECONDS", default=10.0)

CHANNEL_LAYERS: dict[str, Any] = {
    "default": {
        # channels_redis with a lighter per-socket receive (realtime/layers.py).
        "BACKEND": "realtime.layers.LeanRedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    # redis-py >= 6 times reads out after 5 s, colliding with the layer's
                    # own 5 s blocking read (channels_redis #422).
                    "socket_timeout": None,
                    "max_connections": REDIS_MAX_CONNECTIONS,
                    # A pooled connection idle this long is PINGed before use, and a command
                    # that meets a dead one (Redis restarted) is retried on a new connection:
                    # without these a stale pooled connection failed the next new sockets.
                    "health_check_interval": 10,
                    "retry": AsyncRetry(ExponentialBackoff(cap=0.5, base=0.05), 3),
                    "retry_on_error": [RedisConnectionError, RedisTimeoutError],
                    # No CLIENT SETINFO per new connection (realtime/redis.py says why).
                    "driver_info": None,
                }
            ],
            "prefix": REDIS_KEY_PREFIX + "asgi",
            # The default (100) silently drops group sends to a busy socket.
            "capacity": 1500,
            "expiry": 30,
        },
    }
}


def _celery_url(url: str) -> str:
    return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url


# Django's cache (allauth's rate limits, login throttling) is shared by every process.
CACHES = {
    "default": {
        "BACKEND": "realtime.cache.ScopedRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_KEY_PREFIX + "cache",
    }
}

CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=_celery_url(REDIS_URL))
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": REDIS_KEY_PREFIX + "celery:"}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"

# --- Auth and allauth
AUTHENTICATION_BACKENDS = [
    # First: refuses a login from a locked-out account or address before a password is tried.
    "accounts.throttling.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "home"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = env("ACCOUNT_EMAIL_VERIFICATION", default="optional")
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_SIGNUP_FORM_CLASS = "accounts.forms.SignupExtraForm"
ACCOUNT_ADAPTER = "accounts.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapters.SocialAccountAdapter"
SOCIALACCOUNT_LOGIN_ON_GET = False
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False  # our adapter decides, per trusted provider
SOCIALACCOUNT_QUERY_EMAIL = True
# An X login gives no email: a social sign-up may go without one (User.email is nullable).
SOCIALACCOUNT_EMAIL_REQUIRED = False
# A social login whose email matches an existing account joins it only for these providers:
# they are the ones whose emails we trust to be verified by the provider.
SOCIALACCOUNT_TRUSTED_EMAIL_PROVIDERS = env.list(
    "SOCIALACCOUNT_TRUSTED_EMAIL_PROVIDERS", default=["facebook", "vk"]
)
SOCIALACCOUNT_PROVIDERS: dict[str, dict[str, Any]] = {
    "facebook": {
        "APPS": [
            {
                "client_id": env("FACEBOOK_CLIENT_ID", default=""),
                "secret": env("FACEBOOK_CLIENT_SECRET", default=""),
            }
        ],
        "METHOD": "oauth2",
        # gender, birthday and location need their user_* permissions (the policy lists them).
        "SCOPE": ["email", "public_profile", "user_gender", "user_birthday", "user_location"],
        "FIELDS": [
            "id",
            "email",
            "name",
            "first_name",
            "last_name",
            "gender",
            "birthday",
            "location{location{country_code,city}}",
        ],
        "VERSION": "v19.0",
    },
    "vk": {
        "APPS": [
            {
                "client_id": env("VK_CLIENT_ID", default=""),
                "secret": env("VK_CLIENT_SECRET", default=""),
            }
        ],
        "SCOPE": ["email"],
    },
    "twitter_oauth2": {
        "APPS": [
            {
                "client_id": env("X_CLIENT_ID", default=""),
                "secret": env("X_CLIENT_SECRET", default=""),
            }
        ],
    },
}

# --- I18N, static, media
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ru", "Русский")]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
# Browser libraries come from the npm registry (package.json, `npm ci` in `make install`)
# and are served as they are, under /static/vendor/<package>/...: no bundler, no copies in git.
# Of the npm packages, only the folders the pages use are static files (lucide-static alone
# carries 60 MB of fonts and bundles that collectstatic would otherwise copy).
_NPM = BASE_DIR / "node_modules"
VENDOR_STATIC = [
    "lucide-static/icons",
    "flag-icons/css",
    "flag-icons/flags",
    "@matrix-org/matrix-sdk-crypto-wasm",
]
STATICFILES_DIRS = [BASE_DIR / "static", *((f"vendor/{p}", _NPM / p) for p in VENDOR_STATIC)]
# WebAssembly.instantiateStreaming refuses any other type; not every mime.types lists it.
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".mjs")
STATIC_ROOT = env("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "var" / "static"))
MEDIA_URL = "/media/"
MEDIA_ROOT = env("DJANGO_MEDIA_ROOT", default=str(BASE_DIR / "var" / "media"))
# Behind nginx: the internal location that serves MEDIA_ROOT (e.g. "/protected-media/"); the
# app checks who may read a file and nginx sends it. Empty: the app sends the file itself.
MEDIA_X_ACCEL_REDIRECT = env("MEDIA_X_ACCEL_REDIRECT", default="")
# Serve /static/ from the ASGI app (local runs and tests); production uses the proxy.
SERVE_STATIC = env.bool("DJANGO_SERVE_STATIC", default=False)
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# Cookies: the session's and CSRF's only (accounts/privacy/cookies.py); flash messages live
# in the session rather than in a cookie of their own.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

EMAIL_BACKEND = env(
    "DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = env("DJANGO_DEFAULT_FROM_EMAIL", default="no-reply@localhost")

# Structured logs (config/logs.py): JSON lines in production (DJANGO_LOG_JSON), readable
# lines locally; request and connection ids on every line; content never logged.
LOGGING = logging_config(
    json_logs=env.bool("DJANGO_LOG_JSON", default=False),
    level=env("DJANGO_LOG_LEVEL", default="INFO"),
)

# --- realtime/: limits every WebSocket product shares (a product may lower them).
WS_MAX_TEXT_FRAME_BYTES = env.int("WS_MAX_TEXT_FRAME_BYTES", default=16 * 1024)
WS_MAX_BINARY_FRAME_BYTES = env.int("WS_MAX_BINARY_FRAME_BYTES", default=4 * 1024)
WS_RATE_CAPACITY = env.int("WS_RATE_CAPACITY", default=40)  # burst, messages
WS_RATE_REFILL_PER_SECOND = env.float("WS_RATE_REFILL_PER_SECOND", default=20.0)
PRESENCE_TTL_SECONDS = env.int("PRESENCE_TTL_SECONDS", default=90)
# Origins whose pages may open sockets, compared as (scheme, host, port): realtime/origin.py.
WS_ALLOWED_ORIGINS = env.list("WS_ALLOWED_ORIGINS", default=CSRF_TRUSTED_ORIGINS)
# Also the origin the socket was served on (its Host header, if ALLOWED_HOSTS takes it, and
# scheme): on in local and test, where servers run on any loopback port.
WS_ALLOW_SERVED_ORIGIN = env.bool("WS_ALLOW_SERVED_ORIGIN", default=False)
# Connects (realtime.services.connect_admit): token buckets per user and per client IP, and a
# cap on a user's open sockets (all products, all devices). A refused connect costs one Redis
# call and is closed with 4429 (try later). The bursts let a restart's reconnects through.
WS_CONNECT_USER_BURST = env.int("WS_CONNECT_USER_BURST", default=30)
WS_CONNECT_USER_PER_SECOND = env.float("WS_CONNECT_USER_PER_SECOND", default=1.0)
WS_CONNECT_IP_BURST = env.int("WS_CONNECT_IP_BURST", default=120)
WS_CONNECT_IP_PER_SECOND = env.float("WS_CONNECT_IP_PER_SECOND", default=5.0)
WS_MAX_SOCKETS_PER_USER = env.int("WS_MAX_SOCKETS_PER_USER", default=30)
# Admission (realtime/admission.py): new sockets a process works on at once, their connects
# (from the session read) and first joins; the rest of a reconnect storm waits its turn.
WS_ADMISSION_CONCURRENCY = env.int("WS_ADMISSION_CONCURRENCY", default=64)
# Durable stream (docs/protocols/stream.md): items a socket may have in flight unacked.
STREAM_WINDOW = env.int("STREAM_WINDOW", default=200)
# How long a process's first ack waits for others to share its statement. No socket waits on
# it (a delivery does not queue behind the ack before it); the "delivered" tick is this late.
STREAM_ACK_GATHER_MS = env.float("STREAM_ACK_GATHER_MS", default=10.0)
# Each ASGI process renews a liveness key this often, with this TTL; survivors clean up
# after a process whose key ran out (realtime/liveness.py), so within TTL + one beat.
LIVENESS_BEAT_SECONDS = env.float("LIVENESS_BEAT_SECONDS", default=1.0)
# Longer than the worst full-GC pause measured (2 s at 10,000 sockets), so a busy process
# is not taken for dead.
LIVENESS_TTL_SECONDS = env.float("LIVENESS_TTL_SECONDS", default=4.0)
# A thread renews the key while the loop has run within this long: a loop busy for seconds
# is alive; one wedged past this is dead.
LIVENESS_STALL_SECONDS = env.float("LIVENESS_STALL_SECONDS", default=30.0)
LIVENESS_SOCKETS_KEEP_SECONDS = env.int("LIVENESS_SOCKETS_KEEP_SECONDS", default=3600)
# Full garbage collections of an ASGI process run this often instead of when CPython's
# heuristic fires (realtime/gc_policy.py); 0 leaves CPython's defaults.
ASGI_GC_FULL_SECONDS = env.float("ASGI_GC_FULL_SECONDS", default=60.0)
ASGI_GC_MAX_DEFER_SECONDS = env.float("ASGI_GC_MAX_DEFER_SECONDS", default=60.0)

# --- accounts/: ages of majority per product, deletion grace period.
AGE_RULES = {"videochat": 18, "messaging": 10, "voice": 0}
# Under this age, EEA users keep protective privacy defaults (CallsApp policy).
EEA_PRIVACY_AGE = 16
ACCOUNT_DELETION_GRACE_DAYS = env.int("ACCOUNT_DELETION_GRACE_DAYS", default=30)

# --- voice/ (CBLINE)
VOICE_AUDIO_TTL_SECONDS = env.int("VOICE_AUDIO_TTL_SECONDS", default=30)
# Keys channel password hashes (voice.services.channel_password_hash); empty: from SECRET_KEY.
# Changing it invalidates every channel password.
VOICE_CHANNEL_PASSWORD_PEPPER = env("VOICE_CHANNEL_PASSWORD_PEPPER", default="")
# Audio per CBLINE packet (a multiple of the 20 ms Opus frame): one frame a packet keeps
# talk-to-hear low; the floor holder's pacing (one packet per 20 ms plus slack) allows it.
VOICE_PACKET_MS = env.int("VOICE_PACKET_MS", default=20)
# Audio a talker may send: Opus voice needs 16-32 kbit/s (the page encodes at 24); 64 leaves
# room for MediaRecorder's WebM framing. Beyond it a packet is refused.
VOICE_MAX_BITRATE_BPS = env.int("VOICE_MAX_BITRATE_BPS", default=64_000)
# Audio kept for replay per channel (all its transmissions within the TTL together); past it
# a packet is refused, so no channel can fill Redis.
VOICE_CHANNEL_MAX_HELD_BYTES = env.int("VOICE_CHANNEL_MAX_HELD_BYTES", default=2 * 1024 * 1024)
VOICE_MAX_TRANSMISSION_SECONDS = env.int("VOICE_MAX_TRANSMISSION_SECONDS", default=60)
# The floor is a lease the talker's socket renews every third of this while it talks: a
# process that dies holding it frees it within this long even with no survivor to help.
VOICE_FLOOR_LEASE_SECONDS = env.float("VOICE_FLOOR_LEASE_SECONDS", default=5.0)
VOICE_LOCATION_TTL_SECONDS = env.int("VOICE_LOCATION_TTL_SECONDS", default=120)
VOICE_CONNECTION_LOG_RETENTION_DAYS = env.int("VOICE_CONNECTION_LOG_RETENTION_DAYS", default=90)

# --- messaging/ (CallsApp; docs/protocols/callsapp.md)
MESSAGING_SERVER_NAME = env("MESSAGING_SERVER_NAME", default="localhost")
# Undelivered events, deliveries and media are deleted after this (the policy: 2 weeks).
MESSAGING_RETENTION_DAYS = env.int("MESSAGING_RETENTION_DAYS", default=14)
MESSAGING_MAX_EVENT_BYTES = env.int("MESSAGING_MAX_EVENT_BYTES", default=64 * 1024)
MESSAGING_MAX_REQUEST_BYTES = env.int("MESSAGING_MAX_REQUEST_BYTES", default=1024 * 1024)
MESSAGING_MAX_ONE_TIME_KEYS = 100  # per upload
MESSAGING_MAX_CLAIM_DEVICES = 50  # (user, device) pairs per claim
MESSAGING_MAX_GROUP_MEMBERS = env.int("MESSAGING_MAX_GROUP_MEMBERS", default=256)
# Claims per user: a burst, then a refill rate. Keeps one user from draining others' keys.
MESSAGING_CLAIM_CAPACITY = env.int("MESSAGING_CLAIM_CAPACITY", default=60)
MESSAGING_CLAIM_PER_SECOND = env.float("MESSAGING_CLAIM_PER_SECOND", default=1.0)
# Community posts one user may make: a burst of 20, then one every 3 s.
MESSAGING_POST_CAPACITY = env.int("MESSAGING_POST_CAPACITY", default=20)
MESSAGING_POST_PER_SECOND = env.float("MESSAGING_POST_PER_SECOND", default=1 / 3)
# Bots (plain text, not E2E; docs/protocols/callsapp.md "Bots"). Bots one user may own.
MESSAGING_BOTS_PER_USER = env.int("MESSAGING_BOTS_PER_USER", default=20)
# Messages one bot may send (sendMessage), and one user may send to bots: a burst of 30,
# then one a second.
MESSAGING_BOT_SEND_CAPACITY = env.int("MESSAGING_BOT_SEND_CAPACITY", default=30)
MESSAGING_BOT_SEND_PER_SECOND = env.float("MESSAGING_BOT_SEND_PER_SECOND", default=1.0)
# getUpdates' long poll waits at most this long, whatever `timeout` asks.
MESSAGING_BOT_POLL_MAX_SECONDS = env.int("MESSAGING_BOT_POLL_MAX_SECONDS", default=25)
# Webhooks go to https URLs of public addresses only (no request to the host's own network).
# True only for developing a bot on one's own machine: http, and loopback/private addresses.
MESSAGING_BOT_WEBHOOK_ALLOW_PRIVATE = env.bool("MESSAGING_BOT_WEBHOOK_ALLOW_PRIVATE", default=False)
MESSAGING_MEDIA_MAX_BYTES = env.int("MESSAGING_MEDIA_MAX_BYTES", default=25 * 1024 * 1024)
MESSAGING_MEDIA_QUOTA_BYTES = env.int("MESSAGING_MEDIA_QUOTA_BYTES", default=200 * 1024 * 1024)

# --- videochat/
VIDEOCHAT_SKIP_TTL_SECONDS = env.int("VIDEOCHAT_SKIP_TTL_SECONDS", default=600)
VIDEOCHAT_STUN_URLS = env.list("VIDEOCHAT_STUN_URLS", default=[])
VIDEOCHAT_TURN_URLS = env.list("VIDEOCHAT_TURN_URLS", default=[])
VIDEOCHAT_TURN_SECRET = env("VIDEOCHAT_TURN_SECRET", default="")
VIDEOCHAT_TURN_TTL_SECONDS = env.int("VIDEOCHAT_TURN_TTL_SECONDS", default=3600)
# Proxies (IPs or CIDRs) whose X-Forwarded-For gives the client IP for the GeoIP country;
# nobody else's header is believed (videochat/geo.py): a client could otherwise pick any
# country it likes by sending the header itself.
VIDEOCHAT_TRUSTED_PROXIES = env.list("VIDEOCHAT_TRUSTED_PROXIES", default=[])
# Dotted path of `f(ip: str) -> str | None` giving an ISO-2 country for an IP address.
VIDEOCHAT_COUNTRY_RESOLVER = "videochat.geo.iptocc_country"
# An SDP is a few KB; a bigger one is abuse or a bug, refused before relaying it.
VIDEOCHAT_MAX_SDP_BYTES = 10 * 1024
# Timeout of one translation request; chat is delivered untranslated past it.
VIDEOCHAT_TRANSLATION_TIMEOUT_SECONDS = 2.0
# Reports: what a reporter may attach, and how many reports (each may carry an image) a
# user may file per hour.
VIDEOCHAT_REPORT_MAX_CHAT_LINES = 50
VIDEOCHAT_REPORT_MAX_LINE_CHARS = 500
VIDEOCHAT_REPORT_MAX_FRAME_BYTES = 2 * 1024 * 1024
VIDEOCHAT_REPORTS_PER_HOUR = 10
# Moderators' time to act on a report: after it, a report that no active ban rests on loses
# its chat lines and still (chat messages are kept only where a ban needs them).
VIDEOCHAT_REPORT_RETENTION_DAYS = env.int("VIDEOCHAT_REPORT_RETENTION_DAYS", default=30)
# A queue entry trusts the paid filters read at hello (or at the last re-read) until the
# paid time ends or payments announces a change; after this long, the next entry has them
# read again beside it (a staff edit of an entitlement in the admin announces nothing).
VIDEOCHAT_FILTERS_RECHECK_SECONDS = 60.0
# Matchmaking forgets a waiting user or a pair whose deadline passes (a process that died
# cannot clean up); a live socket renews them well within the shortest deadline: it
# heartbeats every 30 s, and two missed beats and a waiting user is gone.
VIDEOCHAT_HEARTBEAT_SECONDS = 30.0
VIDEOCHAT_WAIT_TTL_SECONDS = 90
# A chat rarely lasts hours; a pair whose sockets all died must not outlive that.
VIDEOCHAT_PAIR_TTL_SECONDS = 4 * 3600
# Long enough to file a report right after pressing "next", short enough to forget.
VIDEOCHAT_LAST_PARTNER_TTL_SECONDS = 600
# Bound on waiting entries inspected per bucket: a user who skipped many waiting people
# cannot make one matchmaking step walk the whole queue.
VIDEOCHAT_MATCH_MAX_SCAN = 256
# Weight of the newest sample in the time-to-match average, and the age past which an
# average no longer says anything about the queue right now.
VIDEOCHAT_WAIT_EWMA_ALPHA = 0.2
VIDEOCHAT_WAIT_ESTIMATE_MAX_AGE_SECONDS = 3600
# The per-connection public card (name, country...) the partner is shown at a match.
VIDEOCHAT_CARD_TTL_SECONDS = 6 * 3600
TRANSLATION_BACKEND = env("TRANSLATION_BACKEND", default="none")  # none | libretranslate
LIBRETRANSLATE_URL = env("LIBRETRANSLATE_URL", default="")
LIBRETRANSLATE_API_KEY = env("LIBRETRANSLATE_API_KEY", default="")

# --- Content Security Policy (django-csp): scripts, styles and sockets from this origin only.
# No inline scripts, styles or event handlers anywhere; 'wasm-unsafe-eval' lets the Matrix
# crypto SDK compile its WebAssembly (it does not allow JavaScript eval). 'self' in
# connect-src covers this origin's ws:/wss: sockets (CSP level 3).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", "'wasm-unsafe-eval'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "media-src": ["'self'", "blob:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-src": ["'none'"],
        "frame-ancestors": ["'none'"],
        "report-uri": ["/csp-report/"],
    },
}
# Camera, microphone and location for this origin's pages only (config/security.py).
PERMISSIONS_POLICY = "camera=(self), microphone=(self), geolocation=(self), payment=()"

# --- Operations: health, login throttling, errors (README "Operating it").
# Readiness fails when the media disk is fuller than this.
HEALTH_DISK_MAX_PERCENT = env.float("HEALTH_DISK_MAX_PERCENT", default=95.0)

# Prometheus endpoint (/metrics on each process): who may read it. The address is the one
# the ASGI server took from a trusted proxy; nginx refuses /metrics outright.
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
METRICS_TOKEN = env("METRICS_TOKEN", default="")

# Failed logins (django-axes): an account is locked after AXES_FAILURE_LIMIT failures from
# anywhere, and an address after as many against any account, for AXES_COOLOFF_TIME. Counts
# live in the shared cache and expire with the cool-off: no table of who failed when.
# allauth's own failed-login limit would answer first with a different message; axes owns it.
ACCOUNT_RATE_LIMITS = {"login_failed": None}
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_USERNAME_FORM_FIELD = "login"  # allauth's login form
AXES_USERNAME_CALLABLE = "accounts.throttling.login_username"
# The ASGI server has already replaced the peer with the client named by a trusted proxy
# (uvicorn --proxy-headers --forwarded-allow-ips, daphne --proxy-headers).
AXES_CLIENT_IP_CALLABLE = "accounts.throttling.login_client_ip"
AXES_LOCKOUT_CALLABLE = "accounts.throttling.lockout_response"
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False

# Errors go to Sentry only when a DSN is set; personal data is scrubbed before sending.
SENTRY_DSN = env("SENTRY_DSN", default="")
if SENTRY_DSN:
    from config.sentry import init_sentry

    init_sentry(
        dsn=SENTRY_DSN,
        environment=env("SENTRY_ENVIRONMENT", default="production"),
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
    )

# --- accounts/privacy: export archives, deletion requests by email
PRIVACY_EXPORT_ROOT = env("PRIVACY_EXPORT_ROOT", default=str(BASE_DIR / "var" / "exports"))
PRIVACY_EXPORT_LINK_HOURS = env.int("PRIVACY_EXPORT_LINK_HOURS", default=48)
PRIVACY_EXPORT_MIN_INTERVAL_HOURS = env.int("PRIVACY_EXPORT_MIN_INTERVAL_HOURS", default=24)
PRIVACY_DELETION_CONFIRM_HOURS = env.int("PRIVACY_DELETION_CONFIRM_HOURS", default=24)
# How long the record of a request made by email is kept (unconfirmed ones: the link's life).
# Deletion requests one network address may make per hour (each may mail a stranger).
PRIVACY_DELETION_REQUESTS_PER_HOUR = env.int("PRIVACY_DELETION_REQUESTS_PER_HOUR", default=5)
PRIVACY_DELETION_REQUEST_RETENTION_DAYS = env.int(
    "PRIVACY_DELETION_REQUEST_RETENTION_DAYS", default=365
)

# --- payments/: provider credentials come from the environment only (README "Payments").
# PAYMENT_PROVIDERS names the providers in use; production refuses to start when one of them
# lacks a credential (production.py).
PAYMENT_PROVIDERS = env.list("PAYMENT_PROVIDERS", default=[])
# A verified webhook older (or newer) than this is refused: a captured delivery cannot be
# replayed later.
PAYMENTS_EVENT_TOLERANCE_SECONDS = env.int("PAYMENTS_EVENT_TOLERANCE_SECONDS", default=300)
# How long an erased account's sales stay as the accounting record (commercial and tax law
# keep invoices and payment records for up to ten years in much of the EU).
PAYMENTS_RECORD_RETENTION_YEARS = env.int("PAYMENTS_RECORD_RETENTION_YEARS", default=10)
STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY", default="")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET", default="")
# Empty: Stripe's own API. Tests point it at a local stand-in that speaks Stripe's HTTP API.
STRIPE_API_BASE = env("STRIPE_API_BASE", default="")
PAYPAL_CLIENT_ID = env("PAYPAL_CLIENT_ID", default="")
PAYPAL_CLIENT_SECRET = env("PAYPAL_CLIENT_SECRET", default="")
PAYPAL_WEBHOOK_ID = env("PAYPAL_WEBHOOK_ID", default="")
PAYPAL_SANDBOX = env.bool("PAYPAL_SANDBOX", default=False)
# CA bundle that PayPal's webhook signing certificates must chain to (empty: certifi's).
PAYPAL_CERT_CA_BUNDLE = env("PAYPAL_CERT_CA_BUNDLE", default="")
GOOGLE_PLAY_PACKAGE_NAME = env("GOOGLE_PLAY_PACKAGE_NAME", default="")
# Path to the service account's JSON key (Play Console: API access), for purchases.* calls.
GOOGLE_PLAY_SERVICE_ACCOUNT_FILE = env("GOOGLE_PLAY_SERVICE_ACCOUNT_FILE", default="")
# The Pub/Sub push subscription's OIDC token: its audience and service account e-mail.
GOOGLE_PUBSUB_AUDIENCE = env("GOOGLE_PUBSUB_AUDIENCE", default="")
GOOGLE_PUBSUB_SERVICE_ACCOUNT = env("GOOGLE_PUBSUB_SERVICE_ACCOUNT", default="")

# --- accounts/contact: the contact form
CONTACT_RETENTION_DAYS = env.int("CONTACT_RETENTION_DAYS", default=365)
CONTACT_MAX_ATTACHMENTS = env.int("CONTACT_MAX_ATTACHMENTS", default=3)
CONTACT_MAX_ATTACHMENT_BYTES = env.int("CONTACT_MAX_ATTACHMENT_BYTES", default=5 * 1024 * 1024)
CONTACT_MAX_TOTAL_BYTES = env.int("CONTACT_MAX_TOTAL_BYTES", default=10 * 1024 * 1024)
CONTACT_MAX_IMAGE_PIXELS = env.int("CONTACT_MAX_IMAGE_PIXELS", default=40_000_000)
CONTACT_ZIP_MAX_UNPACKED_BYTES = env.int("CONTACT_ZIP_MAX_UNPACKED_BYTES", default=50 * 1024 * 1024)
CONTACT_ZIP_MAX_MEMBERS = env.int("CONTACT_ZIP_MAX_MEMBERS", default=500)
# Messages one address (or one network address) may send per hour.
CONTACT_MESSAGES_PER_HOUR = env.int("CONTACT_MESSAGES_PER_HOUR", default=5)
# Where people report security flaws (security.txt and /security/).
SECURITY_CONTACT_EMAIL = env("SECURITY_CONTACT_EMAIL", default="security@localhost")
