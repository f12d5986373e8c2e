"""Channels groups (and any Redis keys) payments uses, in one place."""

from __future__ import annotations


def entitlements_group(user_id: int) -> str:
    """Every socket that shows something this user may have to pay for."""
    return f"payments.user.{user_id}"
