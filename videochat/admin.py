"""What moderators see and do: review reports (the still and the reported lines), ban for
N days, decide appeals. Evidence images are shown through a staff-only view, never as
public media URLs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from realtime.errors import ServiceError

from . import services
from .models import Appeal, AppealStatus, Ban, Report, ReportStatus

QUICK_BAN_DAYS = (1, 7, 30)


def _evidence(kind: str, obj: Report | Ban, field: Any) -> str:
    if not field:
        return "—"
    url = reverse("videochat:evidence", args=[kind, obj.pk])
    return format_html('<a href="{0}"><img src="{0}" alt="" style="max-height:160px"></a>', url)


class BanDaysForm(forms.Form):
    days = forms.IntegerField(min_value=1, max_value=3650, initial=7)
    reason = forms.CharField(
        required=False, max_length=500, help_text="Shown to the user; default: the report reason."
    )


def _ban_reports(
    modeladmin: admin.ModelAdmin,  # type: ignore[type-arg]
    request: HttpRequest,
    queryset: QuerySet[Report],
    days: int,
    reason: str = "",
) -> None:
    reports = list(queryset.exclude(reported=None))
    bans = services.bans_from_reports(
        reports=reports,
        duration=dt.timedelta(days=days),
        created_by=request.user,  # type: ignore[arg-type]
        reason=reason,
    )
    modeladmin.message_user(request, f"{len(bans)} user(s) banned for {days} day(s).")


def _quick_ban_action(days: int) -> Any:
    def action(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        _ban_reports(modeladmin, request, queryset, days)

    action.__name__ = f"ban_{days}_days"
    return admin.action(description=f"Ban reported users for {days} day(s)")(action)


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["id", "created_at", "reason", "reported", "reporter", "status", "thumb"]
    list_filter = ["status", "reason"]
    search_fields = ["reported__email", "reporter__email"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "reporter",
        "reported",
        "reason",
        "created_at",
        "lines",
        "still",
        "status",
        "reviewed_at",
        "reviewed_by",
    ]
    exclude = ["chat_lines", "frame"]
    actions = [
        "ban_for_n_days",
        *[_quick_ban_action(d) for d in QUICK_BAN_DAYS],
        "dismiss",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # reports come from users only

    def delete_model(self, request: HttpRequest, obj: Report) -> None:
        services.report_delete(report=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        for report in queryset:
            services.report_delete(report=report)

    @admin.display(description="still")
    def thumb(self, obj: Report) -> str:
        return "yes" if obj.frame else "—"

    @admin.display(description="still of the reported user")
    def still(self, obj: Report) -> str:
        return _evidence("report", obj, obj.frame)

    @admin.display(description="chat lines the reporter sent")
    def lines(self, obj: Report) -> str:
        if not obj.chat_lines:
            return "—"
        rows = ((line["from"], line["text"]) for line in obj.chat_lines)
        return format_html("<ol>{}</ol>", format_html_join("", "<li><b>{}</b>: {}</li>", rows))

    @admin.action(description="Ban reported users for N days…")
    def ban_for_n_days(
        self, request: HttpRequest, queryset: QuerySet[Report]
    ) -> HttpResponse | None:
        form = BanDaysForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            _ban_reports(
                self, request, queryset, form.cleaned_data["days"], form.cleaned_data["reason"]
            )
            return None
        return TemplateResponse(
            request,
            "videochat/admin_ban_days.html",
            {
                **self.admin_site.each_context(request),
                "title": "Ban reported users",
                "form": form,
                "reports": queryset,
                "opts": self.model._meta,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(description="Dismiss (no ban; the still is deleted)")
    def dismiss(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        n = 0
        for report in queryset.filter(status=ReportStatus.OPEN):
            services.report_dismiss(report=report, by=request.user)  # type: ignore[arg-type]
            n += 1
        self.message_user(request, f"{n} report(s) dismissed.")


class AppealInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Appeal
    extra = 0
    fields = ("created_at", "text", "status", "decided_at", "decided_by")
    readonly_fields = fields
    can_delete = False


class BanForm(forms.ModelForm):  # type: ignore[type-arg]
    """Checks the change with the service's own rule, so a bad end is a form error."""

    class Meta:
        model = Ban
        fields = ["reason", "expires_at"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("expires_at") is not None:
            try:
                services.ban_end_check(ban=self.instance, expires_at=cleaned["expires_at"])
            except ServiceError as exc:
                self.add_error("expires_at", exc.detail)
        return cleaned


@admin.register(Ban)
class BanAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = BanForm
    list_display = ["id", "user", "starts_at", "expires_at", "active", "facebook_uid", "vk_uid"]
    search_fields = ["user__email", "facebook_uid", "vk_uid"]
    date_hierarchy = "starts_at"
    readonly_fields = [
        "user",
        "facebook_uid",
        "vk_uid",
        "report",
        "picture",
        "starts_at",
        "created_by",
        "created_at",
    ]
    fields = [*readonly_fields[:5], "reason", "starts_at", "expires_at", "created_by"]
    inlines = [AppealInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # bans are made from reports (services.ban_create)

    # Staff writes go through the services: checks, events and files are theirs.
    def save_model(self, request: HttpRequest, obj: Ban, form: Any, change: bool) -> None:
        services.ban_update(
            ban=obj, reason=form.cleaned_data["reason"], expires_at=form.cleaned_data["expires_at"]
        )

    def delete_model(self, request: HttpRequest, obj: Ban) -> None:
        services.ban_delete(ban=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Ban]) -> None:
        for ban in queryset:
            services.ban_delete(ban=ban)

    @admin.display(boolean=True)
    def active(self, obj: Ban) -> bool:
        return obj.is_active

    @admin.display(description="image (deleted when the ban ends)")
    def picture(self, obj: Ban) -> str:
        return _evidence("ban", obj, obj.image)


@admin.register(Appeal)
class AppealAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["id", "ban", "created_at", "status", "decided_at"]
    list_filter = ["status"]
    readonly_fields = ["ban", "text", "created_at", "status", "decided_at", "decided_by"]
    actions = ["accept", "reject"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def _decide(self, request: HttpRequest, queryset: QuerySet[Appeal], accept: bool) -> None:
        n = 0
        for appeal in queryset.filter(status=AppealStatus.OPEN):
            services.appeal_decide(appeal=appeal, accept=accept, by=request.user)  # type: ignore[arg-type]
            n += 1
        self.message_user(request, f"{n} appeal(s) decided.", messages.SUCCESS)

    @admin.action(description="Accept: lift the ban now")
    def accept(self, request: HttpRequest, queryset: QuerySet[Appeal]) -> None:
        self._decide(request, queryset, True)

    @admin.action(description="Reject: the ban stays")
    def reject(self, request: HttpRequest, queryset: QuerySet[Appeal]) -> None:
        self._decide(request, queryset, False)
