"""Channels made before the minimum range (voice.services.MIN_RANGE_KM) had one narrower:
widen them to it, so no existing channel can still be used to place a talker."""

from typing import Any

from django.db import migrations

MIN_RANGE_KM = 25  # voice.services.MIN_RANGE_KM when this was written


def widen(apps: Any, schema_editor: Any) -> None:
    Channel = apps.get_model("voice", "Channel")
    Channel.objects.filter(range_km__gt=0, range_km__lt=MIN_RANGE_KM).update(
        range_km=MIN_RANGE_KM
    )


class Migration(migrations.Migration):
    dependencies = [
        ("voice", "0003_connection_log_device_uid"),
    ]

    operations = [
        migrations.RunPython(widen, migrations.RunPython.noop),
    ]
