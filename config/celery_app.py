"""Celery: JSON only, acks late, and the beat schedule declared here in code."""

import os
from typing import Any

from celery import Celery, signals
from celery.schedules import crontab

from realtime.metrics import CELERY_TASKS

# Unset means production (which refuses to start without its secrets), never DEBUG:
# `make` and config/run_local.py choose config.settings.local explicitly.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Privacy promises that are kept by time passing: each entry names the task that keeps one.
app.conf.beat_schedule = {
    "payments-entitlements-expire": {
        "task": "payments.tasks.entitlements_expire",
        "schedule": 60.0,
    },
    # An erased account's sales, kept for accounting only as long as the law requires.
    "payments-records-purge": {
        "task": "payments.tasks.records_purge",
        "schedule": crontab(minute=11, hour=4),
    },
    # The CBLINE policy page says an unrefreshed location is deleted within half a minute
    # of its expiry: keep the two together.
    "voice-location-expire": {
        "task": "voice.tasks.location_expire",
        "schedule": 30.0,
    },
    "voice-connection-log-purge": {
        "task": "voice.tasks.connection_log_purge",
        "schedule": crontab(minute=17, hour=3),
    },
    "videochat-ban-images-purge": {
        "task": "videochat.tasks.ban_images_purge",
        "schedule": 300.0,
    },
    "videochat-report-evidence-purge": {
        "task": "videochat.tasks.report_evidence_purge",
        "schedule": crontab(minute=47),
    },
    # Who chatted with whom must not outlive its deadline in Redis when the queue is quiet.
    "videochat-matchmaking-sweep": {
        "task": "videochat.tasks.matchmaking_sweep",
        "schedule": 60.0,
    },
    "messaging-undelivered-purge": {
        "task": "messaging.tasks.undelivered_purge",
        "schedule": crontab(minute=23),
    },
    # Bot updates no bot fetched: deleted after MESSAGING_RETENTION_DAYS (the 14 days of the
    # policy's undelivered messages; the chat's history is the user's to delete).
    "messaging-bot-updates-purge": {
        "task": "messaging.tasks.bot_updates_purge",
        "schedule": crontab(minute=29),
    },
    "accounts-deleted-purge": {
        "task": "accounts.tasks.deleted_accounts_purge",
        "schedule": crontab(minute=41, hour=3),
    },
    "accounts-data-exports-expire": {
        "task": "accounts.tasks.data_exports_expire",
        "schedule": crontab(minute=7),
    },
    "accounts-contact-messages-purge": {
        "task": "accounts.tasks.contact_messages_purge",
        "schedule": crontab(minute=23, hour=4),
    },
    "accounts-sessions-expired-purge": {
        "task": "accounts.tasks.sessions_expired_purge",
        "schedule": crontab(minute=31),
    },
    "accounts-deletion-requests-purge": {
        "task": "accounts.tasks.deletion_requests_purge",
        "schedule": crontab(minute=53, hour=3),
    },
}


# Task outcomes for Prometheus (realtime/metrics.py).
def _count(outcome: str) -> Any:
    def handler(sender: Any = None, **kwargs: Any) -> None:
        name = getattr(sender, "name", None) or str(sender)
        CELERY_TASKS.labels(name, outcome).inc()

    return handler


_on_success = _count("success")
_on_failure = _count("failure")
_on_retry = _count("retry")
signals.task_success.connect(_on_success, weak=False)
signals.task_failure.connect(_on_failure, weak=False)
signals.task_retry.connect(_on_retry, weak=False)
