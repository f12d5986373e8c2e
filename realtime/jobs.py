"""Background jobs started by name.

A service names the Celery task it starts instead of importing its app's tasks module: the
tasks call the services, so the import would go both ways. The name is the task's registered
name (`@shared_task(name=...)`); an unknown name fails loudly at the call."""

from __future__ import annotations

from typing import Any

from celery import current_app


def enqueue(name: str, *args: Any) -> None:
    current_app.tasks[name].delay(*args)
