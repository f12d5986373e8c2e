"""What staff see of the privacy rights at work (imported by accounts/admin.py)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import DataExport, DeletionRequest


@admin.register(DeletionRequest)
class DeletionRequestAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["email", "status", "mail_sent", "user", "created_at", "confirmed_at"]
    list_filter = ["status", "mail_sent"]
    search_fields = ["email"]
    date_hierarchy = "created_at"
    raw_id_fields = ["user"]
    readonly_fields = [
        "email",
        "message",
        "user",
        "status",
        "mail_sent",
        "created_at",
        "confirmed_at",
    ]
    exclude = ["token_hash"]

    # Requests come from the form and are confirmed by the account's owner, never by staff.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(DataExport)
class DataExportAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["user", "status", "percent", "size", "created_at", "expires_at"]
    list_filter = ["status"]
    raw_id_fields = ["user"]
    # Staff see that an export happened, never its link or its file.
    fields = ("user", "status", "steps_done", "steps_total", "size", "created_at", "expires_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
