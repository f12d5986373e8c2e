"""ASGI entry point for daphne or uvicorn: HTTP to Django (the Bot API, /messaging/bot-api/,
to a lean async stack of its own: config/token_asgi.py), WebSockets to the products'
consumers behind the origin check and (user, device, session) authentication."""

import atexit
import os

# Unset means production (which refuses to start without its secrets), never DEBUG:
# `make` and config/run_local.py choose config.settings.local explicitly.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import reverse  # noqa: E402

import messaging.routing  # noqa: E402
import payments.routing  # noqa: E402
import realtime.routing  # noqa: E402
import videochat.routing  # noqa: E402
import voice.routing  # noqa: E402
from accounts.middleware import SessionDeviceAuthMiddlewareStack  # noqa: E402
from config.logs import log_context  # noqa: E402
from config.token_asgi import TokenApiHandler  # noqa: E402
from realtime import gc_policy, metrics  # noqa: E402
from realtime.admission import AdmissionMiddleware  # noqa: E402
from realtime.origin import OriginValidator  # noqa: E402
from realtime.rawsocket import RawSocketMiddleware  # noqa: E402

http_app = django_asgi_app
if settings.SERVE_STATIC:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    http_app = ASGIStaticFilesHandler(django_asgi_app)

# Same URLs, same views: only the middleware around them differs.
BOT_API_PREFIX = reverse("messaging:bot_api", kwargs={"method": "m"}).removesuffix("m")
token_api_app = TokenApiHandler()


async def http_router(scope, receive, send):  # type: ignore[no-untyped-def]
    app = token_api_app if scope["path"].startswith(BOT_API_PREFIX) else http_app
    return await app(scope, receive, send)


websocket_urlpatterns = [
    *realtime.routing.websocket_urlpatterns,
    *voice.routing.websocket_urlpatterns,
    *videochat.routing.websocket_urlpatterns,
    *payments.routing.websocket_urlpatterns,
    *messaging.routing.websocket_urlpatterns,
]

router = ProtocolTypeRouter(
    {
        "http": http_router,
        "websocket": OriginValidator(
            AdmissionMiddleware(SessionDeviceAuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)


@log_context
async def _logged(scope, receive, send):  # type: ignore[no-untyped-def]
    gc_policy.start_in_loop()
    return await router(scope, receive, send)


# Outermost: the raw socket path needs the server's own `send`, before anything wraps it
# (log_context does, for its access line); the raw writes bypass only that wrapper.
application = RawSocketMiddleware(_logged)


# Prometheus: GC pauses of this process; on exit its open-socket gauge stops counting.
metrics.watch_gc()
atexit.register(metrics.mark_process_dead)

# Last, so that everything made while importing is frozen (see realtime/gc_policy.py).
gc_policy.install(settings.ASGI_GC_FULL_SECONDS, settings.ASGI_GC_MAX_DEFER_SECONDS)
