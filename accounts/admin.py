from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from realtime.errors import ServiceError

from . import services
from .models import BirthDateChange, Device, Profile, User


class ProfileInline(admin.StackedInline):
    model = Profile
    can_delete = False
    fields = [
        ("nickname", "gender", "birth_date", "country"),
        "description",
        "photo",
        ("language", "translation_target"),
        ("show_online_status", "send_read_receipts"),
        "guardian_allows_privacy_changes",
    ]
    # Changed only through a reviewed BirthDateChange, which keeps the audit trail.
    readonly_fields = ["birth_date"]


class DeviceInline(admin.TabularInline):
    model = Device
    extra = 0
    fields = ("make", "model", "platform", "client_version", "last_seen_at", "created_at")
    readonly_fields = fields
    can_delete = True
    show_change_link = True


class DeletionFilter(admin.SimpleListFilter):
    title = "deletion"
    parameter_name = "deletion"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:  # type: ignore[type-arg]
        return [("requested", "Deletion requested"), ("none", "Not requested")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> QuerySet[User]:
        if self.value() == "requested":
            return queryset.filter(deletion_requested_at__isnull=False)
        if self.value() == "none":
            return queryset.filter(deletion_requested_at__isnull=True)
        return queryset


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["-date_joined"]
    list_display = [
        "__str__",
        "nickname",
        "country",
        "is_active",
        "is_staff",
        "date_joined",
        "deletion",
    ]
    list_filter = ["is_active", "is_staff", DeletionFilter, "profile__country"]
    search_fields = ["email", "first_name", "last_name", "profile__nickname"]
    list_select_related = ["profile"]
    # is_active changes through the actions below (services), never the bare field.
    readonly_fields = ["is_active", "last_login", "date_joined", "deletion_requested_at"]
    inlines = [ProfileInline, DeviceInline]
    actions = ["deactivate", "reactivate", "request_deletion", "cancel_deletion"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Dates", {"fields": ("last_login", "date_joined", "deletion_requested_at")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    @admin.display(description="nickname", ordering="profile__nickname")
    def nickname(self, obj: User) -> str:
        return getattr(getattr(obj, "profile", None), "nickname", "")

    @admin.display(description="country", ordering="profile__country")
    def country(self, obj: User) -> str:
        return getattr(getattr(obj, "profile", None), "country", "")

    @admin.display(description="deletion", ordering="deletion_requested_at")
    def deletion(self, obj: User) -> str:
        if obj.deletion_requested_at is None:
            return ""
        return format_html('<span title="{}">requested</span>', obj.deletion_requested_at)

    @admin.action(description="Deactivate (ban): no login, every session and socket ends")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            services.account_deactivate(user=user)
        self.message_user(request, f"{queryset.count()} account(s) deactivated.", messages.SUCCESS)

    @admin.action(description="Reactivate deactivated accounts")
    def reactivate(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        done = 0
        for user in queryset:
            try:
                services.account_reactivate(user=user)
            except ServiceError as e:
                self.message_user(request, e.detail, messages.WARNING)
            else:
                done += 1
        self.message_user(request, f"{done} account(s) reactivated.", messages.SUCCESS)

    @admin.action(description="Delete profiles (inaccessible now, erased after the grace period)")
    def request_deletion(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            services.account_delete_request(user=user)
        self.message_user(request, f"{queryset.count()} profile(s) deleted.", messages.SUCCESS)

    @admin.action(description="Restore profiles whose deletion was requested")
    def cancel_deletion(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        pending = queryset.filter(deletion_requested_at__isnull=False)
        count = 0
        for user in pending:
            services.account_deletion_cancel(user=user)
            count += 1
        self.message_user(request, f"{count} profile(s) restored.", messages.SUCCESS)


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["user", "nickname", "country", "language", "gender", "birth_date", "updated_at"]
    search_fields = ["nickname", "user__email"]
    list_filter = ["country", "gender", "language", "show_online_status"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "user",
        "make",
        "model",
        "platform",
        "client_version",
        "last_seen_at",
        "created_at",
    ]
    list_filter = ["platform", "model"]
    search_fields = ["user__email", "device_id", "make"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    readonly_fields = ["created_at"]
    date_hierarchy = "last_seen_at"


@admin.register(BirthDateChange)
class BirthDateChangeAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Requests to correct a birth date: staff approve or refuse; each row is the audit record
    (who asked, from what to what, why, who decided and when)."""

    list_display = ["__str__", "status", "created_at", "decided_by", "decided_at"]
    list_filter = ["status"]
    search_fields = ["user__email", "user__profile__nickname"]
    list_select_related = ["user", "decided_by"]
    date_hierarchy = "created_at"
    actions = ["approve", "refuse"]
    readonly_fields = [
        "user",
        "current",
        "requested",
        "reason",
        "status",
        "created_at",
        "decided_by",
        "decided_at",
    ]
    fields = [*readonly_fields, "note"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # users ask; staff only decide

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the audit record stays (it goes with the account)

    def _decide(
        self, request: HttpRequest, queryset: QuerySet[BirthDateChange], approve: bool
    ) -> None:
        done = 0
        for change in queryset:
            try:
                services.birth_date_change_decide(
                    change_id=change.pk,
                    staff=request.user,  # type: ignore[arg-type]
                    approve=approve,
                    note=change.note,
                )
            except ServiceError as e:
                self.message_user(request, f"{change}: {e.detail}", messages.WARNING)
            else:
                done += 1
        verb = "approved" if approve else "refused"
        self.message_user(request, f"{done} request(s) {verb}.", messages.SUCCESS)

    @admin.action(description="Approve: set the requested birth date")
    def approve(self, request: HttpRequest, queryset: QuerySet[BirthDateChange]) -> None:
        self._decide(request, queryset, approve=True)

    @admin.action(description="Refuse: keep the birth date")
    def refuse(self, request: HttpRequest, queryset: QuerySet[BirthDateChange]) -> None:
        self._decide(request, queryset, approve=False)


# The privacy records' admin lives with them.
from .contact import admin as contact_admin  # noqa: E402, F401
from .privacy import admin as privacy_admin  # noqa: E402, F401
