"""What staff see of CBLINE: channels to manage, and the connection log only in aggregate
(the privacy policy: "we use this information for analytical purposes in aggregated form").

Staff act through the same services as everyone else. A channel added or edited here is
saved by `services.channel_create` / `channel_update` (the same name, range and password
rules) and deleted by `services.channel_delete` (its sockets leave it at once). Sanctions
edited in a channel's inline go through `services.channel_member_moderate`, as a
moderator's socket does: the member's sockets act at once (a banned listener leaves before
the next audio packet, a muted talker loses the floor), and staff get the same refusals as
a form error."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.db.models.functions import TruncDate
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from accounts.countries import country_name, flag
from accounts.models import User
from realtime.errors import ServiceError

from . import services
from .models import Channel, ChannelSanction, ConnectionLog, SanctionKind

AGGREGATE_DAYS = 30


class ChannelAdminForm(forms.ModelForm):
    """Validated by the services' own rules; saved by ChannelAdmin through them."""

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

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "name" in data and data.get("range_km") is not None:
            try:
                services.channel_fields_clean(
                    name=data["name"],
                    range_km=data["range_km"],
                    description=data.get("description", ""),
                    channel_id=self.instance.pk,
                )
            except ServiceError as exc:
                raise ValidationError(exc.detail) from None
        return data


class SanctionFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    """Refuses what the service would refuse, before anything is saved."""

    moderator: User

    def clean(self) -> None:
        super().clean()
        channel = self.instance
        if channel.pk is None:
            if any(f.has_changed() for f in self.forms):
                raise ValidationError("save the channel first, then sanction its members")
            return
        for form in self.forms:
            if not form.has_changed() or not hasattr(form, "cleaned_data"):
                continue
            user = form.cleaned_data.get("user")
            if user is None:
                continue
            try:
                services.channel_member_moderate_check(
                    channel=channel, moderator=self.moderator, target_id=user.pk
                )
            except ServiceError as exc:
                form.add_error("user", exc.detail)


_SET = {SanctionKind.MUTE: "mute", SanctionKind.BAN: "ban"}
_LIFT = {SanctionKind.MUTE: "unmute", SanctionKind.BAN: "unban"}


class SanctionInline(admin.TabularInline):
    model = ChannelSanction
    formset = SanctionFormSet
    fk_name = "channel"
    extra = 0
    fields = ["user", "kind", "until", "created_by", "created_at"]
    readonly_fields = ["created_by", "created_at"]
    raw_id_fields = ["user"]

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        # A class per request (the factory makes a new one each call): who is acting.
        return type(formset.__name__, (formset,), {"moderator": request.user})


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

    def save_model(self, request: HttpRequest, obj: Channel, form: Any, change: bool) -> None:
        """Through channel_create / channel_update, as every other writer of a channel."""
        data = form.cleaned_data
        fields = {
            "name": data["name"],
            "description": data.get("description", ""),
            "range_km": data["range_km"],
        }
        if change:
            saved = services.channel_update(
                channel_id=obj.pk,
                creator=data.get("creator"),
                moderators=data.get("moderators") or [],
                password=data.get("new_password") or "",
                make_public=bool(data.get("make_public")),
                **fields,
            )
        else:
            saved = services.channel_create(
                creator=data.get("creator"), password=data.get("new_password") or "", **fields
            )
            saved.moderators.add(*(data.get("moderators") or []))
        # The admin goes on with `obj` (the inlines are bound to it, the history names it).
        for f in Channel._meta.concrete_fields:
            setattr(obj, f.attname, getattr(saved, f.attname))
        obj._state.adding, obj._state.db = False, saved._state.db

    def delete_model(self, request: HttpRequest, obj: Channel) -> None:
        """Through channel_delete: the sockets in the channel leave it at once."""
        services.channel_delete(channel_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Channel]) -> None:
        for pk in list(queryset.values_list("pk", flat=True)):
            services.channel_delete(channel_id=pk)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # Moderators were set by the service (form.save_m2m would write them past it).
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if not isinstance(formset, SanctionFormSet):
            super().save_formset(request, form, formset, change)
            return
        channel = form.instance
        moderator: User = request.user  # type: ignore[assignment]

        def act(target_id: int, action: str, until: dt.datetime | None = None) -> None:
            services.channel_member_moderate(
                channel_id=channel.pk,
                moderator=moderator,
                target_id=target_id,
                action=action,
                until=until,
            )

        originals = ChannelSanction.objects.in_bulk(
            [f.instance.pk for f in formset.forms if f.instance.pk is not None]
        )
        for sub in formset.deleted_forms:
            gone = originals.get(sub.instance.pk)
            if gone is not None:
                act(gone.user_id, _LIFT[SanctionKind(gone.kind)])
        for sub in formset.forms:
            if sub in formset.deleted_forms or not sub.has_changed():
                continue
            data = sub.cleaned_data
            old = originals.get(sub.instance.pk)
            if old is not None and (old.user_id, old.kind) != (data["user"].pk, data["kind"]):
                # Another member or kind on an existing row: lift the old, impose the new.
                act(old.user_id, _LIFT[SanctionKind(old.kind)])
            act(data["user"].pk, _SET[SanctionKind(data["kind"])], data.get("until"))
        # What the admin's history message reads (the services did the saving).
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []


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
