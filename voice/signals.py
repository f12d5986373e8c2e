"""Sockets cache their user's sanctions in the channel they are in (a press must not wait
for the database). Any change to a sanction, from a service, the admin or a shell, bumps
the user's version in Redis once it commits, and the next press reloads. The channel's
version is bumped too: presses leave the channel's banned members out from a per-process
cache of its bans that this version vouches for."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from . import services
from .models import ChannelSanction


@receiver(post_save, sender=ChannelSanction)
@receiver(post_delete, sender=ChannelSanction)
def sanction_changed(sender: type[ChannelSanction], instance: ChannelSanction, **_: Any) -> None:
    user_id, channel_id = instance.user_id, instance.channel_id
    transaction.on_commit(lambda: services.sanctions_bump(user_id, channel_id))
