"""Video chat's periodic work; tasks take ids or nothing and call services."""

from __future__ import annotations

from celery import shared_task

from . import services


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
