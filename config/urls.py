from django.conf import settings
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from django.views.generic import RedirectView

from accounts.views import media_file
from config import health

urlpatterns: list[URLPattern | URLResolver] = [
    # Browsers ask for /favicon.ico on pages without a <link rel="icon"> (the admin).
    path(
        "favicon.ico",
        RedirectView.as_view(url=f"{settings.STATIC_URL}shared/img/favicon.svg", permanent=True),
    ),
    path("admin/", admin.site.urls),
    # For the load balancer: liveness (this process answers) and readiness (its backends do).
    path("health/live/", health.live, name="health_live"),
    path("health/ready/", health.ready, name="health_ready"),
    path("accounts/", include("allauth.urls")),
    path("", include("accounts.urls")),
    path("privacy/", include("accounts.privacy.urls")),
    path("cbline/", include("voice.urls")),
    path("videochat/", include("videochat.urls")),
    path("messaging/", include("messaging.urls")),
    path("premium/", include("payments.urls")),
    # Uploaded files go through a permission check in every environment (evidence attached
    # to reports and bans is for staff only).
    path(settings.MEDIA_URL.lstrip("/") + "<path:name>", media_file, name="media"),
]
