"""Reads of messaging/ that views, services and the socket share. Selectors never write."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, Subquery, Value

from accounts.models import Device, Profile, User
from accounts.selectors import meets_age_rule_loaded, privacy_defaults_locked, profile_of
from realtime.errors import ServiceError
from realtime.models import StreamItem

from .errors import not_found, unauthorized
from .ids import mxid, user_pk
from .models import (
    Block,
    Bot,
    BotChat,
    BotMessage,
    BotUpdate,
    Community,
    CommunityMember,
    CommunityPost,
    CrossSigningKey,
    DeviceKeys,
    FallbackKey,
    Membership,
    OneTimeKey,
    PostLike,
    Room,
    RoomEvent,
)

EVENT_KIND = "messaging.event"
SYNC_KIND = "messaging.sync"
OTK_ALGORITHM = "signed_curve25519"


DELETED_ACCOUNT_NAME = "Deleted account"


def display_name(user: User) -> str:
    # A deleted account is inaccessible at once, its name too, not only after the purge.
    if user.deletion_requested_at is not None:
        return DELETED_ACCOUNT_NAME
    profile = getattr(user, "profile", None)
    return (profile.nickname if profile else "") or f"user {user.pk}"


def avatar_url(user: User) -> str | None:
    """The profile photo's address (served to signed-in users only), none for a deleted
    account: its photo is inaccessible at once, as its name."""
    if user.deletion_requested_at is not None:
        return None
    profile = getattr(user, "profile", None)
    return f"{settings.MEDIA_URL}{profile.photo.name}" if profile and profile.photo else None


def member_content(user: User, membership: str = "join") -> dict[str, Any]:
    """An m.room.member event's content: name and photo as the room's members see them."""
    content: dict[str, Any] = {"membership": membership, "displayname": display_name(user)}
    if membership == "join" and (url := avatar_url(user)):
        content["avatar_url"] = url
    return content


def member_info(user: User) -> dict[str, Any]:
    """A joined_members entry (the spec's `display_name`, `avatar_url`)."""
    info: dict[str, Any] = {"display_name": display_name(user)}
    if url := avatar_url(user):
        info["avatar_url"] = url
    return info


# The product's key in settings.AGE_RULES.
AGE_RULE = "messaging"


def user_for_mxid(user_mxid: str) -> User | None:
    """The user an id names, if they may use CallsApp (active, old enough): anyone else is
    nobody to invite or find."""
    pk = user_pk(user_mxid)
    if pk is None:
        return None
    user = (
        User.objects.select_related("profile")
        .filter(pk=pk, is_active=True, deletion_requested_at=None)
        .first()
    )
    return user if user is not None and meets_age_rule_loaded(user, AGE_RULE) else None


def room_of_member(*, room_id: str, user_id: int) -> Room:
    """The room, if `user_id` is a member; a non-member cannot tell it from a missing room."""
    room = Room.objects.filter(room_id=room_id, memberships__user_id=user_id).first()
    if room is None:
        raise not_found("no such room, or you are not a member")
    return room


def member_ids(room: Room) -> list[int]:
    return list(room.memberships.order_by("joined_at", "pk").values_list("user_id", flat=True))


def is_admin(room: Room, user_id: int) -> bool:
    return room.memberships.filter(user_id=user_id, is_admin=True).exists()


def blocker_ids(*, of_user_id: int, among: Iterable[int]) -> set[int]:
    """Who among `among` blocked `of_user_id`."""
    return set(
        Block.objects.filter(blocked_id=of_user_id, blocker_id__in=list(among)).values_list(
            "blocker_id", flat=True
        )
    )


def blocked_either_way(a: int, b: int) -> bool:
    return Block.objects.filter(
        Q(blocker_id=a, blocked_id=b) | Q(blocker_id=b, blocked_id=a)
    ).exists()


def contact_ids(user_id: int) -> set[int]:
    """Users who share a room with `user_id`, and the user."""
    rooms = Membership.objects.filter(user_id=user_id).values("room_id")
    ids = set(Membership.objects.filter(room_id__in=rooms).values_list("user_id", flat=True))
    ids.add(user_id)
    return ids


def presence_audience(watcher_id: int, user_ids: Iterable[int]) -> set[int]:
    """Of `user_ids`, those `watcher_id` may see online at all (realtime.hooks): contacts
    (a shared room) where neither blocked the other, whose account is not deleted or
    deactivated. Their own choice to hide their status is applied on top."""
    ids = set(user_ids)
    if not ids:
        return set()
    blocks = Block.objects.filter(
        Q(blocker_id=watcher_id, blocked_id=OuterRef("pk"))
        | Q(blocked_id=watcher_id, blocker_id=OuterRef("pk"))
    )
    found = (
        User.objects.filter(
            pk__in=ids,
            is_active=True,
            deletion_requested_at=None,
            room_memberships__room__memberships__user_id=watcher_id,
        )
        .exclude(Exists(blocks))
        .values_list("pk", flat=True)
        .distinct()
    )
    return set(found) | (ids & {watcher_id})


def key_devices_of(user_ids: Iterable[int]) -> list[tuple[int, int]]:
    """(user_id, device_pk) of the users' devices that run CallsApp (uploaded keys)."""
    ids = list(user_ids)
    if not ids:
        return []
    # Raw: every delivered tick asks this; the queryset cost more CPU than the statement.
    table = connection.ops.quote_name(DeviceKeys._meta.db_table)
    sql = (
        f"SELECT user_id, device_id FROM {table} "  # noqa: S608
        f"WHERE user_id IN ({', '.join(['%s'] * len(ids))}) ORDER BY device_id"
    )
    with connection.cursor() as cur:
        cur.execute(sql, ids)
        return [(int(u), int(d)) for u, d in cur.fetchall()]


def target_devices(
    *, room: Room, sender_id: int, exclude_device_pk: int | None
) -> list[tuple[int, int]]:
    """Who gets an event of `sender_id` in `room`: every keyed device of every member who has
    not blocked the sender, less the sending device."""
    members = member_ids(room)
    blockers = blocker_ids(of_user_id=sender_id, among=members)
    return [
        (uid, pk)
        for uid, pk in key_devices_of(m for m in members if m not in blockers)
        if pk != exclude_device_pk
    ]


SendTargets = tuple[Room, bool, list[tuple[int, int]]]


def _send_targets_sql(sends: str, *, ordered: bool = True) -> str:
    """The read of `send_targets(_many)`: for each row of `sends` (room_id, sender, i), the
    room if the sender is a member, one row per member and keyed device, whether that
    member blocked the sender. Raw SQL: every message comes here, and compiling the
    queryset (two joins of memberships, the keys, the block subquery) cost more CPU than
    PostgreSQL spent on it."""
    q = connection.ops.quote_name
    room_t, member_t = q(Room._meta.db_table), q(Membership._meta.db_table)
    keys_t, block_t = q(DeviceKeys._meta.db_table), q(Block._meta.db_table)
    return (
        f"SELECT s.i, r.id AS room_pk, r.is_direct, m.user_id, EXISTS (SELECT 1 FROM {block_t} b "  # noqa: S608
        "WHERE b.blocker_id = m.user_id AND b.blocked_id = s.sender) AS blocks, k.device_id "
        f"FROM {sends} JOIN {room_t} r ON r.room_id = s.room_id "
        f"JOIN {member_t} me ON me.room_id = r.id AND me.user_id = s.sender "
        f"JOIN {member_t} m ON m.room_id = r.id LEFT JOIN {keys_t} k ON k.user_id = m.user_id"
        + (" ORDER BY s.i, k.device_id" if ordered else "")
    )


def send_targets_cte(sends: str) -> str:
    """`send_targets_many`'s read as a CTE body of a writer's statement (the group commit of
    sends, messaging.services): `sends` a relation with (room_id, sender, i); rows (i,
    room_pk, is_direct, user_id, blocks, device_id)."""
    return _send_targets_sql(sends, ordered=False)


def _send_targets_fold(
    sends: Sequence[tuple[str, int, int]], rows: Iterable[Sequence[Any]], *, first: int
) -> list[SendTargets | None]:
    """The answers in `rows` of `_send_targets_sql`, per send (`s.i` counts from `first`)."""
    found: dict[int, SendTargets] = {}
    for i, room_pk, is_direct, uid, blocks, device_pk in rows:
        index = int(i) - first
        room_id, _, exclude = sends[index]
        if index not in found:
            found[index] = (Room(pk=room_pk, room_id=room_id, is_direct=bool(is_direct)), False, [])
        room, _, targets = found[index]
        if blocks:
            found[index] = (room, True, targets)
        elif device_pk is not None and device_pk != exclude:
            targets.append((int(uid), int(device_pk)))
    return [found.get(i) for i in range(len(sends))]


def send_targets(*, room_id: str, sender_id: int, exclude_device_pk: int) -> SendTargets:
    """A room event's send in one query: the room (if `sender_id` is a member), whether a
    member blocked the sender, and `target_devices` (one row per member and keyed device)."""
    send = (room_id, sender_id, exclude_device_pk)
    sql = _send_targets_sql("(SELECT %s AS room_id, %s AS sender, 0 AS i) s")
    with connection.cursor() as cur:
        cur.execute(sql, [room_id, sender_id])
        [answer] = _send_targets_fold([send], cur.fetchall(), first=0)
    if answer is None:
        raise not_found("no such room, or you are not a member")
    return answer


def send_targets_many(sends: Sequence[tuple[str, int, int]]) -> list[SendTargets | None]:
    """`send_targets` of several sends `(room_id, sender_id, exclude_device_pk)` in one
    query (a group commit's): per send, in order, the same answer, or None where the room
    does not exist or the sender is not a member. A read per send was a third of a batch's
    CPU."""
    if not sends:
        return []
    if connection.vendor != "postgresql":  # no unnest: one read each
        answers: list[SendTargets | None] = []
        for room_id, sender_id, exclude in sends:
            try:
                answers.append(
                    send_targets(room_id=room_id, sender_id=sender_id, exclude_device_pk=exclude)
                )
            except ServiceError:
                answers.append(None)
        return answers
    sql = _send_targets_sql(
        "unnest(%s::text[], %s::bigint[]) WITH ORDINALITY AS s(room_id, sender, i)"
    )
    with connection.cursor() as cur:
        cur.execute(sql, [[room_id for room_id, _, _ in sends], [s for _, s, _ in sends]])
        return _send_targets_fold(sends, cur.fetchall(), first=1)


def key_counts(device_pk: int) -> dict[str, Any]:
    """The sync fields the OlmMachine needs to keep its keys topped up (one query: the
    unused fallback keys come as rows with n = -1)."""
    otks = (
        OneTimeKey.objects.filter(device_id=device_pk)
        .values("algorithm")
        .annotate(n=Count("id"))
        .values_list("algorithm", "n")
    )
    fallback = FallbackKey.objects.filter(device_id=device_pk, used=False).values_list(
        "algorithm", Value(-1)
    )
    counts: dict[str, int] = {}
    unused = []
    for algorithm, n in otks.union(fallback, all=True):
        if n < 0:
            unused.append(algorithm)
        else:
            counts[algorithm] = n
    counts.setdefault(OTK_ALGORITHM, 0)
    return {
        "device_one_time_keys_count": counts,
        "device_unused_fallback_key_types": sorted(unused),
    }


def keys_query(*, user: User, wanted: dict[str, list[str]]) -> dict[str, Any]:
    """keys/query: device keys and cross-signing keys of the asked users that share a room
    with `user` (others: an empty map, so accounts cannot be probed)."""
    visible = contact_ids(user.pk)
    pks = {m: user_pk(m) for m in wanted}
    allowed = {m: pk for m, pk in pks.items() if pk is not None and pk in visible}
    device_keys: dict[str, dict[str, Any]] = {m: {} for m in wanted}
    rows = DeviceKeys.objects.filter(user_id__in=allowed.values()).select_related("device")
    by_pk = {pk: m for m, pk in allowed.items()}
    for row in rows:
        m = by_pk[row.user_id]
        only = wanted[m]
        if only and row.device.device_id not in only:
            continue
        keys = dict(row.keys)
        keys["unsigned"] = {"device_display_name": row.device.name or str(row.device)}
        device_keys[m][row.device.device_id] = keys
    answer: dict[str, Any] = {
        "device_keys": device_keys,
        "failures": {},
        "master_keys": {},
        "self_signing_keys": {},
        "user_signing_keys": {},
    }
    field = {
        CrossSigningKey.Usage.MASTER: "master_keys",
        CrossSigningKey.Usage.SELF_SIGNING: "self_signing_keys",
        CrossSigningKey.Usage.USER_SIGNING: "user_signing_keys",
    }
    for key in CrossSigningKey.objects.filter(user_id__in=allowed.values()):
        # A user-signing key is shown to its owner only (the spec's rule).
        if key.usage == CrossSigningKey.Usage.USER_SIGNING and key.user_id != user.pk:
            continue
        # Who verified whom is nobody else's business: a key shows its owner's signatures
        # and the asker's own only (as Synapse does).
        data = dict(key.key)
        seen_by = (mxid(key.user_id), mxid(user.pk))
        data["signatures"] = {
            s: v for s, v in (data.get("signatures") or {}).items() if s in seen_by
        }
        answer[field[CrossSigningKey.Usage(key.usage)]][by_pk[key.user_id]] = data
    return answer


def room_state(room: Room) -> list[dict[str, Any]]:
    """The room's current state as state events (built from the tables, not history)."""
    members = list(room.memberships.select_related("user__profile").order_by("joined_at", "pk"))
    creator = members[0].user_id if members else 0
    state: list[dict[str, Any]] = [
        state_event(
            room,
            creator,
            "m.room.create",
            "",
            {"creator": mxid(creator), "is_direct": room.is_direct},
        ),
        state_event(room, creator, "m.room.encryption", "", encryption_content()),
        state_event(room, creator, "m.room.name", "", {"name": room.name}),
        state_event(room, creator, "m.room.power_levels", "", power_levels(members)),
    ]
    for m in members:
        state.append(
            state_event(
                room,
                m.user_id,
                "m.room.member",
                mxid(m.user_id),
                member_content(m.user),
            )
        )
    return state


def encryption_content() -> dict[str, Any]:
    return {
        "algorithm": "m.megolm.v1.aes-sha2",
        "rotation_period_ms": 7 * 24 * 3600 * 1000,
        "rotation_period_msgs": 100,
    }


def power_levels(members: Iterable[Membership]) -> dict[str, Any]:
    return {
        "users": {mxid(m.user_id): 100 for m in members if m.is_admin},
        "users_default": 0,
        "events_default": 0,
        "state_default": 100,
        "invite": 100,
        "kick": 100,
        "redact": 100,
    }


def state_event(room: Room, sender_id: int, type_: str, state_key: str, content: Any) -> dict:
    return {
        "type": type_,
        "state_key": state_key,
        "sender": mxid(sender_id),
        "room_id": room.room_id,
        "content": content,
    }


def joined_members(room: Room) -> dict[str, Any]:
    return {
        "joined": {
            mxid(m.user_id): member_info(m.user)
            for m in room.memberships.select_related("user__profile").order_by("joined_at")
        }
    }


def event_json(event: RoomEvent, room_id: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "sender": mxid(event.sender_id),
        "origin_server_ts": int(event.created_at.timestamp() * 1000),
        "room_id": room_id,
        "content": event.content,
    }
    if event.state_key is not None:
        data["state_key"] = event.state_key
    if event.type == "m.room.redaction":
        data["redacts"] = event.content.get("redacts")
    return data


def expiry_of(created_at: dt.datetime) -> dt.datetime:
    return created_at + dt.timedelta(days=settings.MESSAGING_RETENTION_DAYS)


def undelivered(*, user: User, room: Room) -> list[dict[str, Any]]:
    """The user's events in `room` that some device has not acked, with their expiry."""
    events = list(
        RoomEvent.objects.filter(
            room=room, sender=user, delivered_at=None, type="m.room.encrypted"
        ).order_by("created_at")
    )
    pending: dict[int, int] = defaultdict(int)
    for ref in StreamItem.objects.filter(
        kind=EVENT_KIND, ref__in=[e.pk for e in events]
    ).values_list("ref", flat=True):
        if ref is not None:
            pending[ref] += 1
    return [
        {
            "event_id": e.event_id,
            "pending_devices": pending[e.pk],
            "expires_at": int(expiry_of(e.created_at).timestamp() * 1000),
        }
        for e in events
        if pending[e.pk]
    ]


def directory_search(*, user: User, term: str) -> list[dict[str, Any]]:
    """Exactly one nickname (any case) or one email; never a listing. Someone who blocked
    the searcher is not found."""
    term = term.strip()
    q = Q(email__iexact=term) if "@" in term else Q(profile__nickname__iexact=term)
    found = list(
        User.objects.select_related("profile")
        .filter(q, is_active=True, deletion_requested_at=None)
        .exclude(pk=user.pk)[:2]
    )
    if len(found) != 1 or blocker_ids(of_user_id=user.pk, among=[found[0].pk]):
        return []
    if not meets_age_rule_loaded(found[0], AGE_RULE):
        return []
    return [{"user_id": mxid(found[0].pk), "display_name": display_name(found[0])}]


def ignored_users(user: User) -> dict[str, Any]:
    ids = Block.objects.filter(blocker=user).values_list("blocked_id", flat=True)
    return {"ignored_users": {mxid(pk): {} for pk in ids}}


def own_devices(user: User) -> dict[str, Any]:
    return {
        "devices": [
            {
                "device_id": d.device_id,
                "display_name": d.name or str(d),
                "last_seen_ts": int(d.last_seen_at.timestamp() * 1000),
            }
            for d in Device.objects.filter(user=user).order_by("-last_seen_at")
        ]
    }


def render_stream_items(device_pk: int, items: Sequence[StreamItem]) -> list[dict[str, Any]]:
    """The sync socket's frames for a run of this app's stream items: each a Matrix
    /sync-shaped batch. Key counts are not repeated in each: they come after hello and when
    a key is claimed (the client reads absent counts as "no news")."""
    refs = [it.ref for it in items if it.kind == EVENT_KIND and it.ref is not None]
    events = {e.pk: e for e in RoomEvent.objects.filter(pk__in=refs).select_related("room")}
    frames = []
    for it in items:
        sync: dict[str, Any]
        if it.kind == EVENT_KIND:
            event = events.get(it.ref or 0)
            sync = timeline_sync(event, event.room.room_id, it.user_id) if event else {}
        else:
            sync = dict(it.body)
        frames.append(sync_frame(sync))
    return frames


def sync_frame(sync: dict[str, Any]) -> dict[str, Any]:
    return {"type": "sync", "sync": sync}


def timeline_sync(event: RoomEvent, room_id: str, user_id: int) -> dict[str, Any]:
    """`event` as the /sync batch of `user_id`'s devices: their own leave goes under "leave"."""
    own_leave = (
        event.type == "m.room.member"
        and event.state_key == mxid(user_id)
        and event.content.get("membership") == "leave"
    )
    section = "leave" if own_leave else "join"
    return {"rooms": {section: {room_id: {"timeline": {"events": [event_json(event, room_id)]}}}}}


def privacy_settings(user: User) -> dict[str, bool]:
    """The settings as the API shows them; `locked`: held at the protective defaults
    (accounts' EEA under-16 rule), so the page shows them as such."""
    return privacy_settings_of(profile_of(user))


def privacy_settings_of(profile: Profile) -> dict[str, bool]:
    return {
        "read_receipts": profile.send_read_receipts,
        "online_status": profile.show_online_status,
        "locked": privacy_defaults_locked(profile),
    }


# --- Communities and public accounts
OPEN_LISTED = 100  # the open communities listed at once, the biggest first


def community_json(c: Community, m: CommunityMember | None, members: int) -> dict[str, Any]:
    role = None if m is None else "pending" if m.pending else "admin" if m.is_admin else "member"
    return {
        "community_id": c.community_id,
        "name": c.name,
        "description": c.description,
        "kind": c.kind,
        "access": c.access,
        "members": members,
        "role": role,
        "muted": bool(m and m.muted),
    }


def _joined_count() -> Count:
    return Count("members", filter=Q(members__pending=False))


def community_of_viewer(c: Community, user_id: int) -> dict[str, Any]:
    m = c.members.filter(user_id=user_id).first()
    return community_json(c, m, c.members.filter(pending=False).count())


def communities_of(user_id: int) -> dict[str, Any]:
    """Mine (joined or asked for), and the open ones I am not in."""
    mine = list(
        CommunityMember.objects.filter(user_id=user_id)
        .select_related("community")
        .order_by("community__name")
    )
    counts = dict(
        Community.objects.filter(members__user_id=user_id)
        .annotate(n=_joined_count())
        .values_list("pk", "n")
    )
    open_ones = (
        Community.objects.filter(access=Community.Access.OPEN)
        .exclude(members__user_id=user_id)
        .annotate(n=_joined_count())
        .order_by("-n", "name")[:OPEN_LISTED]
    )
    return {
        "mine": [community_json(m.community, m, counts.get(m.community_id, 0)) for m in mine],
        "open": [community_json(c, None, c.n) for c in open_ones],  # type: ignore[attr-defined]
    }


def community_membership(community_id: str, user_id: int) -> CommunityMember | None:
    """The user's joined (not pending) membership, if any."""
    return (
        CommunityMember.objects.select_related("community")
        .filter(community__community_id=community_id, user_id=user_id, pending=False)
        .first()
    )


def community_readable(*, community_id: str, user_id: int) -> Community:
    """An open community is read by anyone signed in; one by approval by its members only,
    and a non-member cannot tell it from a missing one."""
    c = Community.objects.filter(community_id=community_id).first()
    if c is None or (
        c.access != Community.Access.OPEN and community_membership(community_id, user_id) is None
    ):
        raise not_found("no such community, or it admits members only and you are not one")
    return c


def community_of_admin(*, community_id: str, user_id: int) -> Community:
    m = community_membership(community_id, user_id)
    if m is None or not m.is_admin:
        raise not_found("no such community among those you administer")
    return m.community


def post_json(post: CommunityPost, *, likes: int, liked: bool) -> dict[str, Any]:
    return {
        "post_id": post.pk,
        "author": mxid(post.author_id),
        "author_name": display_name(post.author),
        "text": post.text,
        "created_at": post.created_at.isoformat(),
        "likes": likes,
        "liked": liked,
    }


def community_posts(c: Community, viewer_id: int) -> list[dict[str, Any]]:
    """Every post, oldest first, with its like count and whether the viewer liked it. A
    deleted account's posts are hidden at once (erased with the account later)."""
    posts = (
        c.posts.filter(author__deletion_requested_at=None)
        .select_related("author__profile")
        .annotate(
            n=Count("likes"),
            mine=Exists(PostLike.objects.filter(post=OuterRef("pk"), user_id=viewer_id)),
        )
        .order_by("created_at", "pk")
    )
    return [post_json(p, likes=p.n, liked=p.mine) for p in posts]  # type: ignore[attr-defined]


def community_view(c: Community, viewer_id: int) -> dict[str, Any]:
    data = community_of_viewer(c, viewer_id)
    joined = data["role"] in ("admin", "member")
    data["can_post"] = data["role"] == "admin" or (joined and c.kind == Community.Kind.COMMUNITY)
    data["posts"] = community_posts(c, viewer_id)
    return data


def community_people(c: Community) -> dict[str, Any]:
    """For its admins: the members, by seniority, and the requests waiting."""
    rows = c.members.select_related("user__profile").order_by("joined_at", "pk")

    def person(m: CommunityMember) -> dict[str, Any]:
        return {
            "user_id": mxid(m.user_id),
            "display_name": display_name(m.user),
            "role": "admin" if m.is_admin else "member",
            "since": m.joined_at.isoformat(),
        }

    return {
        "members": [person(m) for m in rows if not m.pending],
        "requests": [person(m) for m in rows if m.pending],
    }


def community_push_targets(c: Community) -> list[int]:
    """Who gets a live push: joined members who have not muted it."""
    return list(c.members.filter(pending=False, muted=False).values_list("user_id", flat=True))


# --- Bots (plain, not E2E: messaging.bots)
def _bot_live(owner_field: str = "owner") -> Q:
    """A bot whose owner's account is open (a closed account's bots stop at once)."""
    return Q(**{f"{owner_field}__is_active": True, f"{owner_field}__deletion_requested_at": None})


def bot_of_owner(*, owner_id: int, bot_id: int) -> Bot:
    bot = Bot.objects.filter(pk=bot_id, owner_id=owner_id).first()
    if bot is None:
        raise not_found("no such bot among yours")
    return bot


def bot_by_username(username: str) -> Bot:
    """By its exact username, any case: there is no directory."""
    bot = Bot.objects.filter(_bot_live(), username__iexact=username.strip()).first()
    if bot is None:
        raise not_found(f'no bot is named exactly "{username.strip()}"')
    return bot


def bot_by_token(token: str) -> Bot:
    """The Bot API's authentication: `<bot id>:<secret>`, the secret's hash compared in
    constant time."""
    bot_id, _, secret = token.partition(":")
    bot = None
    if bot_id.isdigit() and len(bot_id) < 19 and secret:
        bot = Bot.objects.filter(_bot_live(), pk=int(bot_id)).first()
    given = hashlib.sha256(secret.encode()).hexdigest()
    if bot is None or not hmac.compare_digest(given, bot.token_hash):
        raise unauthorized("Unauthorized")
    return bot


def bot_token_current(bot: Bot) -> bool:
    """Whether the token `bot` was authenticated with still holds (no new token since, the
    owner's account still open): a long poll asks again before it answers."""
    return Bot.objects.filter(_bot_live(), pk=bot.pk, token_hash=bot.token_hash).exists()


def bot_json(bot: Bot, *, chats: int) -> dict[str, Any]:
    """For its owner (never the token or its hash)."""
    return {
        "bot_id": bot.pk,
        "username": bot.username,
        "name": bot.name,
        "description": bot.description,
        "webhook_url": bot.webhook_url or None,
        "chats": chats,
        "created_at": bot.created_at.isoformat(),
    }


def bots_of(owner_id: int) -> dict[str, Any]:
    rows = Bot.objects.filter(owner_id=owner_id).annotate(n=Count("chats")).order_by("username")
    return {"bots": [bot_json(b, chats=b.n) for b in rows]}  # type: ignore[attr-defined]


def bot_profile(bot: Bot) -> dict[str, Any]:
    """What a user sees of a bot."""
    return {"username": bot.username, "name": bot.name, "description": bot.description}


def bot_message_json(m: BotMessage) -> dict[str, Any]:
    return {
        "message_id": m.pk,
        "from_bot": m.from_bot,
        "text": m.text,
        "created_at": m.created_at.isoformat(),
    }


def bot_chat_view(bot: Bot, user_id: int) -> dict[str, Any]:
    """A user's chat with a bot, the whole history oldest first (empty if not started)."""
    chat = BotChat.objects.filter(bot=bot, user_id=user_id).first()
    messages = chat.messages.order_by("created_at", "pk") if chat else []
    return {
        "bot": bot_profile(bot),
        "blocked": bool(chat and chat.blocked),
        "messages": [bot_message_json(m) for m in messages],
    }


def bot_chats_of(user_id: int) -> dict[str, Any]:
    """The user's bot chats, the latest first, with their last message."""
    latest = BotMessage.objects.filter(chat=OuterRef("pk")).order_by("-created_at", "-pk")
    chats = (
        BotChat.objects.filter(_bot_live("bot__owner"), user_id=user_id)
        .annotate(last_text=Subquery(latest.values("text")[:1]))
        .select_related("bot")
        .order_by("-last_at", "-pk")
    )
    return {
        "chats": [
            {
                "bot": bot_profile(c.bot),
                "blocked": c.blocked,
                "last_text": c.last_text or "",  # type: ignore[attr-defined]
                "last_at": c.last_at.isoformat(),
            }
            for c in chats
        ]
    }


def _bot_api_user(chat: BotChat) -> dict[str, Any]:
    # The bot knows a user by the chat's id (not their account's), and by their name.
    return {"id": chat.pk, "is_bot": False, "first_name": display_name(chat.user)}


def bot_api_message(m: BotMessage, chat: BotChat) -> dict[str, Any]:
    """A message in the Bot API's shape (Telegram's Message, the fields we have)."""
    data: dict[str, Any] = {
        "message_id": m.pk,
        "date": int(m.created_at.timestamp()),
        "chat": {"id": chat.pk, "type": "private", "first_name": display_name(chat.user)},
        "text": m.text,
    }
    if not m.from_bot:
        data["from"] = _bot_api_user(chat)
    return data


def bot_update_json(u: BotUpdate) -> dict[str, Any]:
    return {"update_id": u.update_id, "message": bot_api_message(u.message, u.message.chat)}


def bot_updates_pending_count(bot: Bot) -> int:
    return BotUpdate.objects.filter(bot=bot).count()


def bot_updates_pending(bot: Bot, *, limit: int) -> list[dict[str, Any]]:
    rows = (
        BotUpdate.objects.filter(bot=bot)
        .select_related("message__chat__user__profile")
        .order_by("update_id")[:limit]
    )
    return [bot_update_json(u) for u in rows]
