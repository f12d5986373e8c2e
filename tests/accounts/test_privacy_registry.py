"""Every field that refers to a user is deleted and exported by some app's privacy step, or
carries a stated reason: a new model cannot be forgotten."""

from __future__ import annotations

import pytest

from accounts.privacy import registry


def test_every_user_reference_is_deleted_and_exported_or_has_a_reason():
    gaps = registry.coverage_gaps()
    assert not gaps, "\n" + "\n".join(gap.explain() for gap in gaps)


def test_no_step_names_a_field_that_is_not_a_user_reference():
    assert registry.stale_labels() == []


def test_the_introspection_finds_references_through_rows_the_user_owns():
    refs = registry.user_references()
    # Direct references, many-to-many ones, and a reference to a row the user owns.
    assert "voice.ConnectionLog.user" in refs
    assert "voice.Channel.moderators" in refs
    assert "socialaccount.SocialToken.account" in refs
    # Nullable links do not make a model "owned": a ban is not the banned user's row.
    assert "videochat.Appeal.ban" not in refs


def test_a_forgotten_app_is_named_with_what_to_do(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delitem(registry._steps, "voice")
    gaps = {(g.label, g.missing): g.explain() for g in registry.coverage_gaps()}
    message = gaps[("voice.ConnectionLog.user", "deletes")]
    assert "registry.register(app='voice'" in message
    assert "'voice.ConnectionLog.user'" in message and "`deletes`" in message
    assert ("voice.ConnectionLog.user", "exports") in gaps


def test_every_app_with_user_data_has_a_step():
    apps_with_refs = {label.split(".")[0] for label in registry.user_references()}
    named_by = {label.split(".")[0] for s in registry.steps() for label in (*s.deletes, *s.reasons)}
    assert apps_with_refs <= named_by
