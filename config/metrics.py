"""The Prometheus endpoint of each process, and the shared-state gauges it reads at scrape
time. Not public: nginx answers 404 for /metrics, and the view itself only answers clients
on METRICS_ALLOWED_NETWORKS (loopback by default; the address is the one the ASGI server
took from a trusted proxy) or holding METRICS_TOKEN as a bearer token."""

from __future__ import annotations

import hmac
import ipaddress
import time

from django.conf import settings
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from realtime import metrics
from realtime.models import StreamItem
from realtime.redis import get_redis
from videochat import matchmaking


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    try:
        addr = ipaddress.ip_address(request.META.get("REMOTE_ADDR") or "")
    except ValueError:
        return False
    return any(
        addr in ipaddress.ip_network(net, strict=False) for net in settings.METRICS_ALLOWED_NETWORKS
    )


@require_GET
def metrics_endpoint(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse("metrics are not public\n", status=403, content_type="text/plain")
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)


# --- shared state, read when scraped
def videochat_queue() -> dict[tuple[str, ...], float]:
    wait_key = matchmaking.state_keys()[1]
    return {(): float(get_redis().hlen(wait_key))}


def delivery_backlog() -> dict[tuple[str, ...], float]:
    """Items stored for devices that have not acknowledged them, by product."""
    counts: dict[tuple[str, ...], float] = {}
    for row in StreamItem.objects.values("kind").annotate(n=Count("id")):
        product = (row["kind"].partition(".")[0],)
        counts[product] = counts.get(product, 0.0) + row["n"]
    return counts


def delivery_oldest_age() -> dict[tuple[str, ...], float]:
    now = time.time()
    ages: dict[tuple[str, ...], float] = {}
    for row in StreamItem.objects.values("kind").annotate(oldest=Min("created_at")):
        product = (row["kind"].partition(".")[0],)
        age = max(0.0, now - row["oldest"].timestamp())
        ages[product] = max(ages.get(product, 0.0), age)
    return ages


def register() -> None:
    if metrics.has_scrape_gauge("videochat_queue_length"):
        return
    metrics.register_scrape_gauge(
        "videochat_queue_length", "People waiting to be matched.", [], videochat_queue
    )
    metrics.register_scrape_gauge(
        "comms_delivery_backlog_items",
        "Durable stream items awaiting a device's acknowledgement, by product.",
        ["product"],
        delivery_backlog,
    )
    metrics.register_scrape_gauge(
        "comms_delivery_backlog_oldest_seconds",
        "Age of the oldest unacknowledged stream item, by product.",
        ["product"],
        delivery_oldest_age,
    )
