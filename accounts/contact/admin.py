"""Staff read contact messages and answer them here (imported by accounts/admin.py)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from . import services
from .models import ContactAttachment, ContactMessage


class AttachmentInline(admin.TabularInline):  # type: ignore[type-arg]
    model = ContactAttachment
    extra = 0
    can_delete = False
    fields = ("link", "content_type", "size")
    readonly_fields = fields

    @admin.display(description="file")
    def link(self, obj: ContactAttachment) -> str:
        # Served by the media view, to staff only (contact/ is no public folder).
        url = reverse("media", args=[obj.file.name])
        return format_html(
            '<a href="{}" download="{}">{}</a>', url, obj.original_name, obj.original_name
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ContactMessage)
class ContactMessageAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["__str__", "name", "topic", "status", "created_at", "answered_at"]
    list_filter = ["status", "topic"]
    search_fields = ["email", "name", "message"]
    date_hierarchy = "created_at"
    inlines = [AttachmentInline]
    fields = [
        "name",
        "email",
        "user",
        "topic",
        "created_at",
        "message",
        "status",
        "answer",
        "answered_at",
        "answered_by",
    ]
    readonly_fields = [
        "name",
        "email",
        "user",
        "topic",
        "created_at",
        "message",
        "answered_at",
        "answered_by",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: ContactMessage, form: Any, change: bool
    ) -> None:
        if "answer" in form.changed_data and obj.answer.strip():
            services.contact_message_answer(message_id=obj.pk, answer=obj.answer, by=request.user)  # type: ignore[arg-type]
            self.message_user(request, f"Answer sent to {obj.email}.", messages.SUCCESS)
            return
        super().save_model(request, obj, form, change)
