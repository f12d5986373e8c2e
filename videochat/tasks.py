"""Video chat's periodic work; tasks take ids or nothing and call services."""

from __future__ import annotations

from celery import shared_task

from . import matchmaking, services

# Expired entries forgotten per script run: each run blocks Redis, so a backlog is taken in
# bounded bites.
SWEEP_BATCH = 1000


@shared_task(name="videochat.tasks.ban_images_purge")
def ban_images_purge() -> int:
    """Beat, every few minutes: delete the images of expired bans (the ban rows stay)."""
    return services.ban_images_purge()


@shared_task(name="videochat.tasks.ban_image_purge")
def ban_image_purge(ban_id: int) -> bool:
    return services.ban_image_purge(ban_id=ban_id)


@shared_task(name="videochat.tasks.report_evidence_purge")
def report_evidence_purge() -> int:
    """Beat, hourly: delete the chat lines and stills of reports older than
    VIDEOCHAT_REPORT_RETENTION_DAYS that no active ban rests on (the rows stay)."""
    return services.reports_evidence_purge()


@shared_task(name="videochat.tasks.matchmaking_sweep")
def matchmaking_sweep() -> int:
    """Beat, every minute: forget pairs, last partners and skips whose deadline passed.
    Queue steps sweep a few as they go, but a quiet queue runs none: without this, who
    chatted with whom would stay in Redis past its deadline."""
    swept = 0
    while True:
        n = matchmaking.sweep_sync(SWEEP_BATCH)
        swept += n
        if n < SWEEP_BATCH:
            return swept
