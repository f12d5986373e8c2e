from django.conf import settings
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from django.views.generic import RedirectView

from accounts.privacy import pages as privacy_pages
from accounts.views import media_file
from config import health, metrics, security

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
    path("csp-report/", security.csp_report, name="csp_report"),
    # Prometheus, per process; refused to anyone but the scraper (config/metrics.py).
    path("metrics", metrics.metrics_endpoint, name="metrics"),
    path("accounts/", include("allauth.urls")),
    path("", include("accounts.urls")),
    path("privacy/", include("accounts.privacy.urls")),
    # The address the Video Chat Alternative policy gives for the deletion request form.
    path(
        "account-deletion/",
        RedirectView.as_view(
            pattern_name="privacy:deletion_request", permanent=True, query_string=True
        ),
    ),
    path("privacy/", privacy_pages.privacy_index, name="privacy_index"),
    path("privacy/cookies/", privacy_pages.cookies, name="privacy_cookies"),
    path("privacy/<slug:product>/", privacy_pages.policy, name="privacy_policy"),
    path("security/", privacy_pages.security, name="security"),
    path(".well-known/security.txt", privacy_pages.security_txt, name="security_txt"),
    path("contact/", include("accounts.contact.urls")),
    path("cbline/", include("voice.urls")),
    path("videochat/", include("videochat.urls")),
    path("messaging/", include("messaging.urls")),
    path("premium/", include("payments.urls")),
    # Uploaded files go through a permission check in every environment (evidence attached
    # to reports and bans is for staff only).
    path(settings.MEDIA_URL.lstrip("/") + "<path:name>", media_file, name="media"),
]

metrics.register()
