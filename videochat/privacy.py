"""Video chat's privacy step: what it deletes and exports of one user (accounts/privacy).

Who chatted with whom is never stored (pairings live in Redis only). Reports they filed go,
with their frames. Reports against them go too, except those that led to a ban: that
record is kept, unlinked from the account, as the policy says ("we do keep a detailed record
of the ban itself"). Every image of them (report frames, ban images) is deleted."""

from __future__ import annotations

from django.db.models import Q
from django.db.models.fields.files import FieldFile

from accounts.privacy import registry

from .models import Appeal, Ban, Report, ReportStatus


def user_data_delete(*, user_id: int) -> list[FieldFile]:
    files: list[FieldFile] = []
    filed_or_moot = Report.objects.filter(
        Q(reporter_id=user_id) | (Q(reported_id=user_id) & ~Q(status=ReportStatus.BANNED))
    )
    files += [r.frame for r in filed_or_moot.exclude(frame="")]
    filed_or_moot.delete()
    kept_reports = Report.objects.filter(reported_id=user_id)
    files += [r.frame for r in kept_reports.exclude(frame="")]
    kept_reports.update(reported=None, frame="")
    bans = Ban.objects.filter(user_id=user_id)
    files += [b.image for b in bans.exclude(image="")]
    Appeal.objects.filter(ban__in=bans).delete()  # their own words
    bans.update(user=None, image="")
    # Staff who reviewed, banned or decided: unlinked, the records stay.
    Report.objects.filter(reviewed_by_id=user_id).update(reviewed_by=None)
    Ban.objects.filter(created_by_id=user_id).update(created_by=None)
    Appeal.objects.filter(decided_by_id=user_id).update(decided_by=None)
    return files


def user_data_export(*, user_id: int) -> registry.ExportPart:
    part = registry.ExportPart()
    filed = Report.objects.filter(reporter_id=user_id).order_by("pk")
    part.collections["reports_filed"] = [
        {
            "reason": r.reason,
            "chat_lines": r.chat_lines,
            "frame": r.frame.name or None,
            "status": r.status,
            "created_at": r.created_at,
        }
        for r in filed
    ]
    part.files += [r.frame for r in filed if r.frame]
    bans = Ban.objects.filter(user_id=user_id).order_by("pk")
    part.collections["bans"] = [
        {
            "reason": b.reason,
            "starts_at": b.starts_at,
            "expires_at": b.expires_at,
            "image": b.image.name or None,
        }
        for b in bans
    ]
    part.files += [b.image for b in bans if b.image]
    part.collections["appeals"] = [
        {"text": a.text, "status": a.status, "created_at": a.created_at}
        for a in Appeal.objects.filter(ban__user_id=user_id).order_by("pk")
    ]
    return part


def register() -> None:
    staff = (
        "what a staff account reviewed, banned or decided; unlinked when it is erased, "
        "not exported (moderation records, not data about the staff member's own use)"
    )
    registry.register(
        app="videochat",
        title="Video Chat Alternative",
        delete=user_data_delete,
        export=user_data_export,
        deletes=("videochat.Report.reporter", "videochat.Report.reported", "videochat.Ban.user"),
        exports=("videochat.Report.reporter", "videochat.Ban.user"),
        reasons={
            "videochat.Report.reported": (
                "reports filed against the user hold someone else's account of them; "
                "they are deleted with the account, except those that led to a ban, kept "
                "unlinked (with the reported chat lines) as the record of the ban"
            ),
            "videochat.Report.reviewed_by": staff,
            "videochat.Ban.created_by": staff,
            "videochat.Appeal.decided_by": staff,
        },
    )
