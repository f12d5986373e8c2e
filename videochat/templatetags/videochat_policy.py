"""Periods the video chat privacy page states, read from settings so the text says what the
code does."""

from __future__ import annotations

from django import template
from django.conf import settings

register = template.Library()


@register.simple_tag
def report_retention_days() -> int:
    return int(settings.VIDEOCHAT_REPORT_RETENTION_DAYS)
