"""The accounts app's own privacy step: profile, photo, devices, email addresses, linked
social logins, and the user row itself (deleted by the pipeline, after every other step)."""

from __future__ import annotations

from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount, SocialToken
from django.contrib.admin.models import LogEntry
from django.db.models import Q
from django.db.models.fields.files import FieldFile

from realtime.models import StreamHead, StreamItem
from realtime.stream import stream_drop_devices

from ..contact.models import ContactMessage
from ..contact.services import contact_messages_delete
from ..models import BirthDateChange, DataExport, DeletionRequest, Device, Profile, User
from . import registry
from .registry import ExportPart

# realtime's durable per-device stream keeps user and device ids as plain integers.
STREAM_COLUMNS = (
    "realtime.StreamHead.user_id",
    "realtime.StreamHead.device_pk",
    "realtime.StreamItem.user_id",
    "realtime.StreamItem.device_pk",
    "realtime.IdempotencyKey.device_pk",
)
DELETES = (
    "accounts.Profile.user",
    "accounts.Device.user",
    "accounts.BirthDateChange.user",
    "account.EmailAddress.user",
    "account.EmailConfirmation.email_address",
    "socialaccount.SocialAccount.user",
    "socialaccount.SocialToken.account",
    "admin.LogEntry.user",
    "accounts.DataExport.user",
    "accounts.DeletionRequest.user",
    "accounts.ContactMessage.user",
    *STREAM_COLUMNS,
)
EXPORTS = (
    "accounts.ContactMessage.user",
    "accounts.DataExport.user",
    "accounts.DeletionRequest.user",
    "accounts.Profile.user",
    "accounts.Device.user",
    "accounts.BirthDateChange.user",
    "account.EmailAddress.user",
    "socialaccount.SocialAccount.user",
)
REASONS = {
    **{
        label: (
            "the delivery queue of a device (encrypted items waiting for its ack, and "
            "request keys against resends): plumbing, deleted with the device; what waits "
            "is listed by the product it belongs to (CallsApp's pending messages)"
        )
        for label in STREAM_COLUMNS
        if label not in ("realtime.StreamItem.user_id",)
    },
    "realtime.StreamItem.user_id": (
        "items waiting in the user's devices' queues: encrypted, listed by the product they "
        "belong to (CallsApp's pending messages, with their expiry)"
    ),
    "accounts.ContactMessage.answered_by": (
        "the staff member who answered a contact message; unlinked when that staff account "
        "is erased, not exported (support records)"
    ),
    "accounts.BirthDateChange.decided_by": (
        "the staff account that decided someone's birth date request (audit); set to empty "
        "when that staff account is deleted"
    ),
    "account.EmailConfirmation.email_address": (
        "a pending confirmation key for one of the email addresses (exported); a secret, "
        "not data about the user"
    ),
    "socialaccount.SocialToken.account": (
        "the access token a social login gave us: a credential, never shown or exported"
    ),
    "admin.LogEntry.user": (
        "what a staff account did in the admin; kept for staff accountability, deleted "
        "with the staff account"
    ),
}


def user_data_delete(*, user_id: int) -> list[FieldFile]:
    photos: list[FieldFile] = [
        p.photo for p in Profile.objects.filter(user_id=user_id).exclude(photo="")
    ]
    SocialToken.objects.filter(account__user_id=user_id).delete()
    SocialAccount.objects.filter(user_id=user_id).delete()
    EmailAddress.objects.filter(user_id=user_id).delete()  # confirmations cascade
    devices = list(Device.objects.filter(user_id=user_id).values_list("pk", flat=True))
    stream_drop_devices(device_pks=devices)
    StreamItem.objects.filter(user_id=user_id).delete()
    StreamHead.objects.filter(user_id=user_id).delete()
    Device.objects.filter(user_id=user_id).delete()
    BirthDateChange.objects.filter(user_id=user_id).delete()
    Profile.objects.filter(user_id=user_id).delete()
    LogEntry.objects.filter(user_id=user_id).delete()
    exports = DataExport.objects.filter(user_id=user_id)
    archives: list[FieldFile] = [e.file for e in exports.exclude(file="")]
    exports.delete()
    # Their correspondence: messages sent signed in, or from their address.
    user = User.objects.filter(pk=user_id).first()
    mine = (
        Q(user_id=user_id) | Q(email__iexact=user.email)
        if user and user.email
        else Q(user_id=user_id)
    )
    letters = contact_messages_delete(
        ids=list(ContactMessage.objects.filter(mine).values_list("pk", flat=True))
    )
    ContactMessage.objects.filter(answered_by_id=user_id).update(answered_by=None)
    # The record that a request by email was made and carried out stays, without the address.
    DeletionRequest.objects.filter(user_id=user_id).update(user=None, email="", message="")
    return photos + archives + letters


def user_data_export(*, user_id: int) -> ExportPart:
    user = User.objects.get(pk=user_id)
    part = ExportPart()
    part.collections["account"] = [
        {
            "id": user.pk,
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "date_joined": user.date_joined,
            "last_login": user.last_login,
            "deletion_requested_at": user.deletion_requested_at,
        }
    ]
    profile = Profile.objects.filter(user_id=user_id).first()
    if profile is not None:
        part.collections["profile"] = [
            {
                "nickname": profile.nickname,
                "description": profile.description,
                "gender": profile.gender,
                "birth_date": profile.birth_date,
                "country": profile.country,
                "photo": profile.photo.name or None,
                "language": profile.language,
                "translation_target": profile.translation_target,
                "show_online_status": profile.show_online_status,
                "send_read_receipts": profile.send_read_receipts,
                "guardian_allows_privacy_changes": profile.guardian_allows_privacy_changes,
                "updated_at": profile.updated_at,
            }
        ]
        if profile.photo:
            part.files.append(profile.photo)
    part.collections["devices"] = [
        {
            "device_id": d.device_id,
            "name": d.name,
            "make": d.make,
            "model": d.model,
            "platform": d.platform,
            "client_version": d.client_version,
            "created_at": d.created_at,
            "last_seen_at": d.last_seen_at,
        }
        for d in Device.objects.filter(user_id=user_id).order_by("created_at", "pk")
    ]
    part.collections["birth_date_changes"] = [
        {
            "current": c.current,
            "requested": c.requested,
            "reason": c.reason,
            "status": c.status,
            "created_at": c.created_at,
            "decided_at": c.decided_at,
            "note": c.note,
        }
        for c in BirthDateChange.objects.filter(user_id=user_id).order_by("created_at", "pk")
    ]
    part.collections["email_addresses"] = [
        {"email": e.email, "verified": e.verified, "primary": e.primary}
        for e in EmailAddress.objects.filter(user_id=user_id).order_by("pk")
    ]
    part.collections["linked_logins"] = [
        {
            "provider": a.provider,
            "uid": a.uid,
            "date_joined": a.date_joined,
            "last_login": a.last_login,
            # What the provider told us at login (profile fields the policy lists).
            "data": a.extra_data,
        }
        for a in SocialAccount.objects.filter(user_id=user_id).order_by("pk")
    ]
    part.collections["data_exports"] = [
        {"status": e.status, "created_at": e.created_at, "expires_at": e.expires_at}
        for e in DataExport.objects.filter(user_id=user_id).order_by("pk")
    ]
    part.collections["deletion_requests"] = [
        {"email": r.email, "status": r.status, "created_at": r.created_at}
        for r in DeletionRequest.objects.filter(user_id=user_id).order_by("pk")
    ]
    part.collections["contact_messages"] = [
        {
            "topic": m.topic,
            "name": m.name,
            "email": m.email,
            "message": m.message,
            "created_at": m.created_at,
            "answer": m.answer,
            "answered_at": m.answered_at,
            "attachments": [a.original_name for a in m.attachments.all()],
        }
        for m in ContactMessage.objects.filter(user_id=user_id)
        .prefetch_related("attachments")
        .order_by("pk")
    ]
    return part


def register() -> None:
    # Last: the pipeline deletes the user row after every step, and other apps' rows may
    # hang on the devices this step deletes.
    registry.register(
        app="accounts",
        title="Your account",
        delete=user_data_delete,
        export=user_data_export,
        deletes=DELETES,
        exports=EXPORTS,
        reasons=REASONS,
        order=1000,
    )
