"""The registry of privacy steps: each app says how to delete and how to export what it
holds about one user, and which of its model fields refer to a user.

A test walks every model (tests/accounts/test_privacy_registry.py): a field that refers to a
user, or to a row the user owns, must be named by some step in `deletes` and in `exports`,
or carry a stated reason in `reasons`. So a new model cannot be forgotten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import models
from django.db.models.fields.files import FieldFile


@dataclass
class ExportPart:
    """What one app holds about a user: named collections of JSON-ready rows (datetimes are
    fine; the archive writer encodes them), and stored files to put in the archive."""

    collections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    files: list[FieldFile] = field(default_factory=list)


# delete(user_id=...) removes (or unlinks) the app's rows about the user inside the caller's
# transaction and returns the stored files to remove once it commits.
DeleteFn = Callable[..., Sequence[FieldFile]]
# export(user_id=...) returns what the app holds about the user.
ExportFn = Callable[..., ExportPart]


@dataclass(frozen=True)
class PrivacyStep:
    app: str  # the app label, e.g. "voice"
    title: str  # what the user knows it as, e.g. "CBLINE"
    delete: DeleteFn
    export: ExportFn
    # "app_label.Model.field" labels of fields that refer to a user (or to a row a user
    # owns) that this step's delete removes or unlinks, and that its export includes.
    deletes: frozenset[str] = frozenset()
    exports: frozenset[str] = frozenset()
    # Fields left out of deletion or export, each with the reason (shown on the policy page
    # and checked by the introspection test).
    reasons: Mapping[str, str] = field(default_factory=dict)
    # Steps run in ascending order; the accounts step runs last (it owns the user row).
    order: int = 100


_steps: dict[str, PrivacyStep] = {}


def register(
    *,
    app: str,
    title: str,
    delete: DeleteFn,
    export: ExportFn,
    deletes: Iterable[str] = (),
    exports: Iterable[str] = (),
    reasons: Mapping[str, str] | None = None,
    order: int = 100,
) -> PrivacyStep:
    """Register (or replace, on a re-run of ready()) the privacy step of `app`."""
    step = PrivacyStep(
        app=app,
        title=title,
        delete=delete,
        export=export,
        deletes=frozenset(deletes),
        exports=frozenset(exports),
        reasons=dict(reasons or {}),
        order=order,
    )
    _steps[app] = step
    return step


def steps() -> list[PrivacyStep]:
    return sorted(_steps.values(), key=lambda s: (s.order, s.app))


def step_of(app: str) -> PrivacyStep | None:
    return _steps.get(app)


# --- introspection: which fields refer to a user


def field_label(f: models.Field) -> str:  # type: ignore[type-arg]
    return f"{f.model._meta.label}.{f.name}"


def _relations(model: type[models.Model]) -> Iterable[models.Field]:  # type: ignore[type-arg]
    # Forward foreign keys, one-to-ones and many-to-manys (not reverse relations, not
    # generic foreign keys, which name no model).
    for f in model._meta.get_fields():
        if f.is_relation and not f.auto_created and (f.concrete or f.many_to_many):
            yield f  # type: ignore[misc]


def _owned_by_user(model: type[models.Model], owned: set[type[models.Model]]) -> bool:
    for f in _relations(model):
        if f.many_to_many or f.null:
            continue
        if (
            f.related_model in owned
            and getattr(f.remote_field, "on_delete", None) is models.CASCADE
        ):
            return True
    return False


def user_models() -> set[type[models.Model]]:
    """The user model and every model whose rows the user owns: a required foreign key that
    cascades from the user (or from a row the user owns), e.g. Device and what hangs on it."""
    user_model = apps.get_model(settings.AUTH_USER_MODEL)
    owned: set[type[models.Model]] = {user_model}
    grew = True
    while grew:
        grew = False
        for model in apps.get_models():
            if model not in owned and _owned_by_user(model, owned):
                owned.add(model)
                grew = True
    return owned


# Layers below accounts (realtime) cannot have a foreign key to a user or device: they keep
# the id in a plain integer column. These names say "this integer is a user's or a device's".
USER_ID_COLUMNS = ("user_id", "user_pk")
DEVICE_ID_COLUMNS = ("device_pk",)


def id_column_target(f: models.Field) -> str | None:  # type: ignore[type-arg]
    """ "user" or "device" if `f` is a plain integer column holding such an id, else None."""
    if f.is_relation or not isinstance(f, models.IntegerField):
        return None
    if f.name in USER_ID_COLUMNS or f.name.endswith("_user_id"):
        return "user"
    if f.name in DEVICE_ID_COLUMNS or f.name.endswith("_device_pk"):
        return "device"
    return None


def user_references() -> dict[str, models.Field]:  # type: ignore[type-arg]
    """Every field, in every installed model, that points at a user or at a row a user owns,
    by label ("voice.ConnectionLog.user"), and every plain integer column that holds a user's
    or a device's id ("realtime.StreamItem.user_id", see id_column_target)."""
    targets = user_models()
    found: dict[str, models.Field] = {}  # type: ignore[type-arg]
    for model in apps.get_models():
        for f in _relations(model):
            if f.related_model in targets:
                found[field_label(f)] = f
        for f in model._meta.concrete_fields:
            if id_column_target(f) is not None:
                found[field_label(f)] = f
    return found


@dataclass(frozen=True)
class Gap:
    label: str
    missing: str  # "deletes" or "exports"

    def explain(self) -> str:
        app = self.label.split(".", 1)[0]
        verb = "deletes (or unlinks)" if self.missing == "deletes" else "exports"
        return (
            f"{self.label} refers to a user, but no privacy step {verb} it. In {app}'s "
            f"AppConfig.ready, call accounts.privacy.registry.register(app={app!r}, ...) and "
            f"add {self.label!r} to its `{self.missing}` (making its "
            f"{'delete' if self.missing == 'deletes' else 'export'} function handle it), or "
            f"put it in `reasons` with why it is left out. See docs/privacy.md."
        )


def coverage_gaps() -> list[Gap]:
    """Fields that refer to a user which no step deletes or exports or explains."""
    deletes: set[str] = set()
    exports: set[str] = set()
    explained: set[str] = set()
    for step in _steps.values():
        deletes |= step.deletes
        exports |= step.exports
        explained |= set(step.reasons)
    gaps = []
    for label in sorted(user_references()):
        if label not in deletes and label not in explained:
            gaps.append(Gap(label, "deletes"))
        if label not in exports and label not in explained:
            gaps.append(Gap(label, "exports"))
    return gaps


def stale_labels() -> list[str]:
    """Labels a step names that are no user reference (a renamed or removed field)."""
    known = set(user_references())
    named: set[str] = set()
    for step in _steps.values():
        named |= step.deletes | step.exports | set(step.reasons)
    return sorted(named - known)
