"""Prometheus metrics: what an operator of this platform watches (README "Operating it").

Counters and histograms are updated where things happen, in whichever process; gauges that
describe shared state (queue length, delivery backlog) are read from Redis or the database
when Prometheus scrapes, so every process reports the same truth. With
PROMETHEUS_MULTIPROC_DIR set (several processes on one machine, or uvicorn --workers), each
process writes its figures to files there and any process's endpoint reports the sum.

Names follow Prometheus conventions: a `comms_`, `cbline_` or `videochat_` namespace, base
units (seconds), `_total` on counters.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)

WEBSOCKETS_OPEN = Gauge(
    "comms_websocket_connections",
    "Open WebSocket connections, by product.",
    ["product"],
    multiprocess_mode="livesum",
)
WEBSOCKETS_OPENED = Counter(
    "comms_websocket_connections_opened_total",
    "WebSocket connections accepted and authenticated, by product.",
    ["product"],
)

CONNECTS_REFUSED = Counter(
    "comms_websocket_connects_refused_total",
    "WebSocket connects refused with 4429 (try later), by reason: user_rate, ip_rate, "
    "too_many_sockets.",
    ["reason"],
)

FLOOR_REQUESTS = Counter(
    "cbline_floor_requests_total",
    "Presses of the talk button, by outcome (granted, busy, refused).",
    ["outcome"],
)
FLOOR_GRANT_SECONDS = Histogram(
    "cbline_floor_grant_seconds",
    "From a floor request arriving to floor.granted being sent.",
    buckets=LATENCY_BUCKETS,
)
PACKETS_RELAYED = Counter(
    "cbline_packets_relayed_total",
    "Audio packets written to listeners' sockets (one per listener).",
)
PACKETS_DROPPED = Counter(
    "cbline_packets_dropped_total",
    "Audio packets not delivered, by reason: slow_listener (could not keep up), "
    "send_error (socket gone), unknown_transmission (no longer known to this process).",
    ["reason"],
)
EVENTS_UNSENT = Counter(
    "realtime_events_unsent_total",
    "Live event pushes (nudges) that could not reach the channel layer (Redis down); what "
    "must arrive waits in the durable stream.",
)
RAW_SOCKET_FALLBACKS = Counter(
    "raw_socket_fallbacks_total",
    "Sockets on uvicorn's websockets-sansio whose internals were not as realtime/rawsocket.py "
    "expects, so their audio goes through the ordinary ASGI send (slower, still correct).",
)
RELAY_LAG_SECONDS = Histogram(
    "cbline_relay_lag_seconds",
    "From an audio packet arriving from Redis to its write to the last local listener.",
    buckets=LATENCY_BUCKETS,
)

BOT_POLLS_WAITING = Gauge(
    "callsapp_bot_polls_waiting",
    "Bot API getUpdates long polls waiting for an update (each costs no thread).",
    multiprocess_mode="livesum",
)

VIDEOCHAT_MATCHES = Counter("videochat_matches_total", "Pairs made by matchmaking.")
VIDEOCHAT_TIME_TO_MATCH = Histogram(
    "videochat_time_to_match_seconds",
    "From joining the queue to being paired, per person.",
    buckets=WAIT_BUCKETS,
)

CELERY_TASKS = Counter(
    "comms_celery_tasks_total",
    "Celery tasks finished, by task name and outcome (success, failure, retry).",
    ["task", "outcome"],
)

GC_PAUSE_SECONDS = Histogram(
    "comms_gc_pause_seconds",
    "Garbage collection pauses of the process, by generation.",
    ["generation"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0),
)


# --- figures read at scrape time (shared state: the same from every process)
ScrapeGauge = tuple[str, str, list[str], Callable[[], dict[tuple[str, ...], float]]]
_scrape_gauges: list[ScrapeGauge] = []


def register_scrape_gauge(
    name: str, documentation: str, labels: list[str], read: Callable[[], Any]
) -> None:
    """A product's gauge of shared state; `read()` returns {label values: value}."""
    _scrape_gauges.append((name, documentation, labels, read))


def has_scrape_gauge(name: str) -> bool:
    return any(g[0] == name for g in _scrape_gauges)


class _ScrapeCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, documentation, labels, read in _scrape_gauges:
            family = GaugeMetricFamily(name, documentation, labels=labels)
            for label_values, value in read().items():
                family.add_metric(list(label_values), value)
            yield family


def render() -> tuple[bytes, str]:
    """The exposition text for one scrape."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        for collector in list(REGISTRY._collector_to_names):
            registry.register(collector)
    registry.register(_ScrapeCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead() -> None:
    """On exit: this process's open-socket gauge stops counting (multi-process mode)."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


# --- hooks, small enough to sit in hot paths
def _product(consumer: object) -> str:
    # The app that defines the consumer: voice (CBLINE), videochat, messaging, realtime.
    return type(consumer).__module__.partition(".")[0]


def socket_opened(consumer: object) -> None:
    product = _product(consumer)
    WEBSOCKETS_OPEN.labels(product).inc()
    WEBSOCKETS_OPENED.labels(product).inc()


def socket_closed(consumer: object) -> None:
    WEBSOCKETS_OPEN.labels(_product(consumer)).dec()


class RelayCounts:
    """Turns the relay's running totals into counter increments, once per packet."""

    def __init__(self) -> None:
        self.seen = (0, 0, 0, 0)

    def sync(self, delivered: int, behind: int, errors: int, unknown: int) -> None:
        now = (delivered, behind, errors, unknown)
        d, b, e, u = (a - b for a, b in zip(now, self.seen, strict=True))
        self.seen = now
        if d > 0:
            PACKETS_RELAYED.inc(d)
        if b > 0:
            PACKETS_DROPPED.labels("slow_listener").inc(b)
        if e > 0:
            PACKETS_DROPPED.labels("send_error").inc(e)
        if u > 0:
            PACKETS_DROPPED.labels("unknown_transmission").inc(u)


def videochat_matched(queued_at: float, *, pairs: int) -> None:
    """One person paired after waiting since `queued_at` (monotonic); `pairs` is 1 on the
    side that made the pair, so each pair is counted once."""
    if queued_at:
        VIDEOCHAT_TIME_TO_MATCH.observe(max(0.0, time.monotonic() - queued_at))
    if pairs:
        VIDEOCHAT_MATCHES.inc(pairs)


_gc_started: dict[int, float] = {}


def _gc_callback(phase: str, info: dict[str, int]) -> None:
    gen = info.get("generation", 0)
    if phase == "start":
        _gc_started[gen] = time.perf_counter()
    elif gen in _gc_started:
        GC_PAUSE_SECONDS.labels(str(gen)).observe(time.perf_counter() - _gc_started.pop(gen))


def watch_gc() -> None:
    """Time every collection of this process (idempotent)."""
    if _gc_callback not in gc.callbacks:
        gc.callbacks.append(_gc_callback)
