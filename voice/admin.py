"""What staff see of CBLINE: channels to manage, and the connection log only in aggregate
(the privacy policy: "we use this information for analytical purposes in aggregated form")."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.hashers import make_password
from django.db.models import Count, QuerySet
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from accounts.countries import country_name, flag

from .models import Channel, ChannelSanction, ConnectionLog

AGGREGATE_DAYS = 30


class ChannelAdminForm(forms.ModelForm):
    new_password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Set a new channel password (stored hashed). Leave blank to keep it.",
    )
    make_public = forms.BooleanField(required=False, help_text="Remove the password.")

    class Meta:
        model = Channel
        fields = ["name", "description", "range_km", "creator", "moderators"]

    def save(self, commit: bool = True) -> Channel:
        channel: Channel = super().save(commit=False)
        if self.cleaned_data.get("make_public"):
            channel.password_hash = ""
        elif self.cleaned_data.get("new_password"):
            channel.password_hash = make_password(self.cleaned_data["new_password"])
        if commit:
            channel.save()
            self.save_m2m()
        return channel


class SanctionInline(admin.TabularInline):
    model = ChannelSanction
    fk_name = "channel"
    extra = 0
    fields = ["user", "kind", "until", "created_by", "created_at"]
    readonly_fields = ["created_by", "created_at"]
    raw_id_fields = ["user"]


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelAdminForm
    list_display = ["name", "range_km", "protected", "creator", "created_at"]
    search_fields = ["name", "description"]
    filter_horizontal = ["moderators"]
    raw_id_fields = ["creator"]
    inlines = [SanctionInline]

    @admin.display(boolean=True)
    def protected(self, obj: Channel) -> bool:
        return obj.is_protected


@admin.register(ConnectionLog)
class ConnectionLogAdmin(admin.ModelAdmin):
    """No per-user trail: the changelist is replaced by counts per day, platform, client
    version and country; there is no add, change, or detail page."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        from django.urls import path

        return [
            path(
                "",
                self.admin_site.admin_view(self.changelist_view),
                name="voice_connectionlog_changelist",
            )
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        since = timezone.now() - dt.timedelta(days=AGGREGATE_DAYS)
        rows = ConnectionLog.objects.filter(created_at__gte=since)
        context = {
            **self.admin_site.each_context(request),
            "title": "CBLINE connections (aggregates)",
            "opts": self.model._meta,
            "days": AGGREGATE_DAYS,
            "total": rows.count(),
            "per_day_platform": list(
                rows.annotate(day=TruncDate("created_at"))
                .values("day", "platform")
                .annotate(connections=Count("id"), users=Count("user_id", distinct=True))
                .order_by("-day", "platform")
            ),
            "per_client_version": _counts(rows, "client_version"),
            "per_country": [
                {**r, "flag": flag(r["value"]), "name": country_name(r["value"])}
                for r in _counts(rows, "country")
            ],
        }
        return TemplateResponse(request, "voice/admin/connection_log_aggregates.html", context)


def _counts(rows: QuerySet[ConnectionLog], field: str) -> list[dict[str, Any]]:
    grouped = (
        rows.values(field)
        .annotate(connections=Count("id"), users=Count("user_id", distinct=True))
        .order_by("-connections", field)
    )
    return [
        {"value": r[field], "connections": r["connections"], "users": r["users"]} for r in grouped
    ]
