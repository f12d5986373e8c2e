"""Reads of the privacy pages: what the server holds about a user, their exports."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from ..models import User
from . import registry
from .models import DataExport

# The page shows this many rows of a collection; the export has them all.
OVERVIEW_ROWS = 50


@dataclass
class Collection:
    name: str
    columns: list[str]
    rows: list[list[Any]]
    total: int

    @property
    def label(self) -> str:
        return self.name.replace("_", " ").capitalize()

    @property
    def more(self) -> int:
        return self.total - len(self.rows)


@dataclass
class Section:
    app: str
    title: str
    collections: list[Collection]

    @property
    def empty(self) -> bool:
        return all(c.total == 0 for c in self.collections)


def held_about(user: User) -> list[Section]:
    """Everything every app holds about the user right now: the same data the export
    writes (each app's registered exporter), as tables."""
    sections = []
    for step in registry.steps():
        part = step.export(user_id=user.pk)
        collections = []
        for name, rows in part.collections.items():
            columns: list[str] = []
            for row in rows:
                columns += [k for k in row if k not in columns]
            shown = [[_cell(row.get(c)) for c in columns] for row in rows[:OVERVIEW_ROWS]]
            collections.append(Collection(name, columns, shown, len(rows)))
        sections.append(Section(step.app, step.title, collections))
    # Your account first, then the products.
    sections.sort(key=lambda s: s.app != "accounts")
    return sections


def _cell(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return timezone.localtime(value)
    if isinstance(value, dict | list):
        return value or ""
    return "" if value is None else value


def exports_of(user: User, *, limit: int = 5) -> list[DataExport]:
    return list(DataExport.objects.filter(user=user).order_by("-created_at", "-pk")[:limit])


def export_downloadable(*, user: User, token: str) -> DataExport | None:
    """The user's ready, unexpired export behind this link, if any."""
    return DataExport.objects.filter(
        user=user,
        token=token,
        status=DataExport.Status.READY,
        expires_at__gt=timezone.now(),
    ).first()
