"""Celery is wired as promised: JSON only, late acks, and every periodic task that keeps a
privacy promise names a task that exists."""

from __future__ import annotations

from config.celery_app import app


def test_every_beat_entry_names_a_registered_task():
    app.loader.import_default_modules()
    missing = [
        entry["task"] for entry in app.conf.beat_schedule.values() if entry["task"] not in app.tasks
    ]
    assert missing == []


def test_serialisation_and_acks():
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_acks_late is True
