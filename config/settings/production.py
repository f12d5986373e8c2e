"""Production: every secret comes from the environment and the process refuses to start
without it."""

import os

from django.core.exceptions import ImproperlyConfigured

# Never fall back to the embedded Redis in production (read by base.py).
os.environ["DJANGO_REQUIRE_REDIS_URL"] = "1"

from config.logs import logging_config
from config.payment_settings import check_payment_environment

from .base import *  # noqa: F403
from .base import (
    ALLOWED_HOSTS,
    PAYMENT_PROVIDERS,
    SOCIALACCOUNT_PROVIDERS,
    WS_ALLOWED_ORIGINS,
    env,
)

DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
if len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set to at least 50 random characters")
for _name in ("DATABASE_URL", "REDIS_URL", "DJANGO_ALLOWED_HOSTS"):
    if not env(_name, default=""):
        raise ImproperlyConfigured(f"{_name} must be set in production")
check_payment_environment(PAYMENT_PROVIDERS)
for _provider, _conf in SOCIALACCOUNT_PROVIDERS.items():
    _app = _conf["APPS"][0]
    if _app["client_id"] and not _app["secret"]:
        raise ImproperlyConfigured(f"{_provider}: a client id is set without its secret")

# security.txt names a mailbox someone reads: the configured one, else security@ the site.
SECURITY_CONTACT_EMAIL = env("SECURITY_CONTACT_EMAIL", default="") or next(
    (f"security@{h.lstrip('.')}" for h in ALLOWED_HOSTS if h and h != "*"), ""
)
if not SECURITY_CONTACT_EMAIL or SECURITY_CONTACT_EMAIL.endswith("@localhost"):
    raise ImproperlyConfigured("SECURITY_CONTACT_EMAIL must be a real mailbox in production")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Sockets from the site's own https pages unless origins are named.
if not WS_ALLOWED_ORIGINS:
    WS_ALLOWED_ORIGINS = [f"https://{h}" for h in ALLOWED_HOSTS if h and h[0] not in ".*"]
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
# Load balancers probe over plain HTTP on the private network.
SECURE_REDIRECT_EXEMPT = [r"^health/"]
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
ACCOUNT_EMAIL_VERIFICATION = env("ACCOUNT_EMAIL_VERIFICATION", default="mandatory")
EMAIL_BACKEND = env("DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_URL = env("EMAIL_URL", default="")
if EMAIL_URL:
    vars().update(env.email_url("EMAIL_URL"))

# One JSON object a line for the log collector, unless told otherwise.
LOGGING = logging_config(
    json_logs=env.bool("DJANGO_LOG_JSON", default=True),
    level=env("DJANGO_LOG_LEVEL", default="INFO"),
)
