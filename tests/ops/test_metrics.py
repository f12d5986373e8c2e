"""The Prometheus endpoint: readable by the scraper only; counts what happens. (A real
CBLINE transmission and a real video chat match are counted in the browser tests through
nginx: tests/e2e/test_voice.py, tests/e2e/test_videochat.py.)"""

from __future__ import annotations

import gc
import json
import re

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from realtime import metrics
from tests.conftest import ROOT
from voice.tasks import connection_log_purge


def samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


@pytest.mark.django_db
def test_a_remote_client_is_refused_without_the_token(settings) -> None:  # type: ignore[no-untyped-def]
    settings.METRICS_TOKEN = "scrape-secret"
    remote = Client(REMOTE_ADDR="203.0.113.9")
    refused = remote.get("/metrics")
    assert refused.status_code == 403 and b"cbline" not in refused.content
    assert remote.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    ok = remote.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")
    assert ok.status_code == 200 and ok["Content-Type"].startswith("text/plain")
    # The scraper on the same machine (or listed networks) needs no token.
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403


@pytest.mark.django_db
def test_figures_named_by_convention_and_counted() -> None:
    def scrape() -> dict[str, float]:
        return samples(Client().get("/metrics").content.decode())

    before = scrape()
    metrics.watch_gc()
    gc.collect()
    connection_log_purge.delay()  # eager in tests
    after = scrape()
    key = 'comms_celery_tasks_total{outcome="success",task="voice.tasks.connection_log_purge"}'
    assert after[key] == before.get(key, 0) + 1
    assert after['comms_gc_pause_seconds_count{generation="2"}'] >= 1
    assert after["videochat_queue_length"] == 0
    for name in (
        "cbline_packets_relayed_total",
        "cbline_relay_lag_seconds_count",
        "cbline_floor_grant_seconds_count",
        "videochat_matches_total",
        "videochat_time_to_match_seconds_count",
    ):
        assert name in after, name


def test_relay_counts_become_counter_increments() -> None:
    counts = metrics.RelayCounts()
    relayed = metrics.PACKETS_RELAYED._value.get()
    slow = metrics.PACKETS_DROPPED.labels("slow_listener")._value.get()
    counts.sync(10, 2, 0, 1)
    counts.sync(15, 2, 1, 1)
    assert metrics.PACKETS_RELAYED._value.get() == relayed + 15
    assert metrics.PACKETS_DROPPED.labels("slow_listener")._value.get() == slow + 2


@pytest.mark.django_db
def test_the_example_dashboard_only_charts_figures_we_export() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "comms-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(?:comms|cbline|videochat)_[a-z_]+", e)}
    exported = set(samples(Client().get("/metrics").content.decode()).keys())
    exported_names = {re.sub(r"\{.*", "", name) for name in exported}
    # Histograms and labelled counters appear once something was observed; their families
    # are declared either way.
    declared = exported_names | {
        f"{name}{suffix}"
        for name in metrics_families()
        for suffix in ("", "_total", "_bucket", "_count", "_sum")
    }
    assert used and used <= declared, used - declared


def metrics_families() -> set[str]:
    from prometheus_client import REGISTRY

    return {
        name
        for collector in list(REGISTRY._collector_to_names)
        for name in REGISTRY._collector_to_names[collector]
    } | {g[0] for g in metrics._scrape_gauges}
