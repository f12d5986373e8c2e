"""`make run`: debug on, static served by the ASGI app, SQLite + embedded Redis unless the
environment names real servers."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="local-development-only-not-secret")
SERVE_STATIC = True
# Servers here run on any loopback port (the nginx test stack too): the page's own origin.
WS_ALLOW_SERVED_ORIGIN = True
# A bot under development runs on this machine: its webhook may be http://127.0.0.1:...
MESSAGING_BOT_WEBHOOK_ALLOW_PRIVATE = env.bool("MESSAGING_BOT_WEBHOOK_ALLOW_PRIVATE", default=True)
