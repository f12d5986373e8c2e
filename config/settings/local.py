"""`make run`: debug on, static served by the ASGI app, SQLite + embedded Redis unless the
environment names real servers."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="local-development-only-not-secret")
SERVE_STATIC = True
# Servers here run on any loopback port (the nginx test stack too): the page's own origin.
WS_ALLOW_SERVED_ORIGIN = True
