from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create(self, email: str | None, password: str | None, **extra: Any) -> User:
        user = self.model(email=self.normalize_email(email) if email else None, **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(
        self, email: str | None = None, password: str | None = None, **extra: Any
    ) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self._create(email, password, **extra)


class User(AbstractUser):
    """One account for all three products. Logged in by email, or by a social account only
    (an X login gives no email, so email may be empty)."""

    username = None  # type: ignore[assignment]
    email = models.EmailField("email address", unique=True, null=True, blank=True)  # type: ignore[assignment]
    # Set when the user deletes their profile: inaccessible at once, purged after the grace.
    deletion_requested_at = models.DateTimeField(null=True, blank=True)
    auth_state_loaded: tuple[str | None, bool | None] | None = None
    # Set by the flow that saves a password when it ends the sessions itself (adapters).
    auth_change_handled = False

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []
    objects: ClassVar[UserManager] = UserManager()  # type: ignore[assignment]

    @classmethod
    def from_db(cls, db: str | None, field_names: Any, values: Any, **kwargs: Any) -> User:
        user = super().from_db(db, field_names, values, **kwargs)
        # What the account could sign in with when loaded: a save that changes it closes the
        # user's sockets (accounts.receivers.user_saved).
        user.auth_state_loaded = (user.__dict__.get("password"), user.__dict__.get("is_active"))
        return user

    def save(self, *args: Any, **kwargs: Any) -> None:
        # allauth writes "" for "no email"; NULL keeps the unique constraint satisfiable.
        if not self.email:
            self.email = None
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return self.email or f"user #{self.pk}"


class Gender(models.TextChoices):
    UNSPECIFIED = "", "Not said"
    FEMALE = "f", "Female"
    MALE = "m", "Male"
    OTHER = "x", "Other"


class Profile(models.Model):
    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="profile")
    nickname = models.CharField(max_length=32, blank=True)
    description = models.CharField(max_length=200, blank=True)
    gender = models.CharField(max_length=1, choices=Gender.choices, blank=True)
    birth_date = models.DateField(null=True, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2")
    photo = models.ImageField(upload_to="profiles/%Y/%m/", blank=True)
    language = models.CharField(max_length=8, default="en")
    translation_target = models.CharField(max_length=8, blank=True)
    show_online_status = models.BooleanField(default=True)
    send_read_receipts = models.BooleanField(default=True)
    # EEA users under 16 keep the protective privacy defaults unless a legal guardian asked
    # otherwise in writing (staff record that here).
    guardian_allows_privacy_changes = models.BooleanField(
        default=False,
        help_text="A legal guardian's written instruction lets this under-16 EEA user change "
        "their privacy settings.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.nickname or str(self.user)


class Device(models.Model):
    """A browser (or app install) signed in to the account: issued by the server at login and
    bound to that login session, so a socket or request authenticates as (user, device,
    session) and nothing a client says names its device. Ending the session ends the device
    (logout, "forget", "sign out everywhere"); CallsApp hangs its keys and message stream on
    it. `device_id` is the policy's "unique user identifier generated from device identifiers":
    Matrix-style, ten capital letters, unique across all users."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="devices")
    device_id = models.CharField(max_length=32, unique=True)
    # The login session the device lives in; NULL once that session has ended.
    session_key = models.CharField(max_length=40, unique=True, null=True, blank=True)
    make = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=64, blank=True)
    platform = models.CharField(max_length=64, blank=True)
    client_version = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return self.name or f"{self.make} on {self.platform}".strip() or self.device_id


class BirthDateChange(models.Model):
    """A user's request to correct their birth date, decided by staff. The birth date gates
    products (Video chat 18+), so it is fixed once given; this row is also the audit record of
    who changed it, from what, to what, and when."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for review"
        APPROVED = "approved", "Approved"
        REFUSED = "refused", "Refused"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="birth_date_changes")
    current = models.DateField(help_text="The birth date on the profile when asked.")
    requested = models.DateField()
    reason = models.CharField(max_length=500)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    note = models.CharField(max_length=500, blank=True, help_text="Why, as told to the user.")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(status="pending"),
                name="birth_date_change_one_pending",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.user} asks to change their birth date from {self.current} to {self.requested}"
        )


# Models kept in their own modules, registered with this app by being imported here.
from .contact.models import ContactAttachment, ContactMessage  # noqa: E402, F401
from .privacy.models import DataExport, DeletionRequest  # noqa: E402, F401
