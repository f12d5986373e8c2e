"""Reads of CBLINE that several callers need: SQL (sync, call through database_sync_to_async
from consumers) and the live state in Redis (async). Selectors never write (not even a memo:
the press's cache of a channel's bans is voice/floor.py's)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
from channels.db import database_sync_to_async
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.countries import country_name, flag
from accounts.models import Profile, User
from realtime.errors import NotAllowed, ServiceError
from realtime.keys import presence_key
from realtime.redis import get_async_redis

from . import keys, transmissions
from .models import Channel, ChannelMembership, ChannelSanction, SanctionKind
from .schemas import BannedMember, Member, RecentTx, Talker

SEARCH_LIMIT = 50


# --- SQL
def channel_get(channel_id: int) -> Channel:
    try:
        return Channel.objects.get(pk=channel_id)
    except Channel.DoesNotExist:
        raise ServiceError("not_found", "no such channel", status=404) from None


def channel_admission(channel_id: int, user_id: int) -> tuple[Channel, dict[str, int | None], bool]:
    """(the channel, the user's sanctions in it now as `sanctions_until` gives them, are they
    a member) in one statement: `channel_admissions` of one."""
    found = channel_admissions([(channel_id, user_id)])[0]
    if isinstance(found, ServiceError):
        raise found
    return found


Admitted = tuple[Channel, dict[str, int | None], bool]


def channel_admissions(asks: list[tuple[int, int]]) -> list[Admitted | ServiceError]:
    """`channel_admission` of each (channel id, user id), in one statement for them all (or
    a ServiceError for a channel that does not exist): a join's admission in a reconnect
    storm, where every socket asks it at once (a queryset with its five subqueries cost more
    CPU to build and compile than PostgreSQL spent on it, and a database hop each cost the
    event loop more than the read). The sanctions also spare the socket's first press its
    own read. One row per ask and sanction in force (a kind at most once), or one without."""
    values = ", ".join(["(%s, %s, %s)"] * len(asks))
    sql = f"""
        WITH asked (i, channel_id, user_id) AS (VALUES {values})
        SELECT asked.i AS _asked, c.*,
            EXISTS (
                SELECT 1 FROM {ChannelMembership._meta.db_table} m
                WHERE m.channel_id = c.id AND m.user_id = asked.user_id
            ) AS _member,
            s.kind AS _kind, s.until AS _until
        FROM asked
        JOIN {Channel._meta.db_table} c ON c.id = asked.channel_id
        LEFT JOIN {ChannelSanction._meta.db_table} s
            ON s.channel_id = c.id AND s.user_id = asked.user_id
            AND (s.until IS NULL OR s.until > %s)
    """  # noqa: S608 (table names from the models, values as parameters)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    params: list[Any] = []
    for i, (channel_id, user_id) in enumerate(asks):
        params += [i, channel_id, user_id]
    found: list[Admitted | None] = [None] * len(asks)
    for row in Channel.objects.raw(sql, [*params, now]):
        i = int(row._asked)  # type: ignore[attr-defined]
        sanctions: dict[str, int | None] = {}
        known = found[i]
        if known is None:
            known = found[i] = (row, sanctions, bool(row._member))  # type: ignore[attr-defined]
        kind, until = row._kind, row._until  # type: ignore[attr-defined]
        if kind:
            if isinstance(until, str):  # SQLite: the text Django stores
                until = parse_datetime(until)
            if until is not None and timezone.is_naive(until):
                until = timezone.make_aware(until, dt.UTC)
            known[1][kind] = None if until is None else int(until.timestamp() * 1000)
    return [
        ServiceError("not_found", "no such channel", status=404) if f is None else f for f in found
    ]


def channels_search(query: str = "", *, limit: int = SEARCH_LIMIT) -> list[Channel]:
    channels: QuerySet[Channel] = Channel.objects.all()
    if query.strip():
        channels = channels.filter(name__icontains=query.strip())
    return list(channels.order_by("name")[:limit])


def sanction_active(channel_id: int, user_id: int, kind: SanctionKind) -> ChannelSanction | None:
    """The user's mute or ban in the channel, if it has not run out."""
    return (
        ChannelSanction.objects.filter(channel_id=channel_id, user_id=user_id, kind=kind)
        .filter(Q(until__isnull=True) | Q(until__gt=timezone.now()))
        .first()
    )


def sanctions_until(channel_id: int, user_id: int) -> dict[str, int | None]:
    """Kind ("mute", "ban") -> end in ms since the epoch (None: forever) of the user's
    sanctions in the channel that have not run out."""
    rows = (
        ChannelSanction.objects.filter(channel_id=channel_id, user_id=user_id)
        .filter(Q(until__isnull=True) | Q(until__gt=timezone.now()))
        .values_list("kind", "until")
    )
    return {kind: None if until is None else int(until.timestamp() * 1000) for kind, until in rows}


def channel_bans(channel_id: int) -> list[BannedMember]:
    """The channel's bans in force, newest first, for its moderators' ban list."""
    rows = (
        ChannelSanction.objects.filter(channel_id=channel_id, kind=SanctionKind.BAN)
        .filter(Q(until__isnull=True) | Q(until__gt=timezone.now()))
        .select_related("user__profile")
        .order_by("-created_at")
    )
    return [
        BannedMember(
            user_id=s.user_id,
            nickname=getattr(getattr(s.user, "profile", None), "nickname", "")
            or f"user{s.user_id}",
            until=None if s.until is None else int(s.until.timestamp() * 1000),
        )
        for s in rows
    ]


def sanctions_in_force(until: dict[str, int | None], now_ms: int) -> set[str]:
    """Of `sanctions_until`'s answer, the kinds still running at `now_ms` (a cached answer
    goes on being right as mutes and bans run out)."""
    return {kind for kind, end in until.items() if end is None or end > now_ms}


async def sanctions_version(user_id: int) -> bytes | None:
    """The counter voice/signals.py bumps on every change of the user's sanctions."""
    version = await get_async_redis().get(keys.sanctions_version_key(user_id))
    return version.encode() if isinstance(version, str) else version


def is_moderator(channel: Channel, user_id: int) -> bool:
    return channel.creator_id == user_id or channel.moderators.filter(pk=user_id).exists()


def may_moderate(channel: Channel, user: Any) -> bool:
    """The channel's moderators, and staff (the same rule as channel_member_moderate_check)."""
    return bool(user.is_staff) or is_moderator(channel, user.pk)


def is_member(channel_id: int, user_id: int) -> bool:
    return ChannelMembership.objects.filter(channel_id=channel_id, user_id=user_id).exists()


def member_channel_ids(user_id: int, channel_ids: list[int]) -> set[int]:
    return set(
        ChannelMembership.objects.filter(user_id=user_id, channel_id__in=channel_ids).values_list(
            "channel_id", flat=True
        )
    )


def nickname_of(user_id: int) -> str:
    profile = Profile.objects.filter(user_id=user_id).only("nickname").first()
    return profile.nickname if profile and profile.nickname else f"user{user_id}"


def profile_nickname(user: Any) -> tuple[str, str]:
    """(the profile's nickname or "", the nickname others see: "user<id>" without one) of
    `user`; no query when the profile came with the user (a socket's connect reads them
    together, accounts.selectors.session_identity)."""
    if User.profile.is_cached(user):
        profile = getattr(user, "profile", None)  # cached as missing: no profile
    else:
        profile = Profile.objects.filter(user_id=user.pk).only("nickname").first()
    nickname = profile.nickname if profile else ""
    return nickname, nickname or f"user{user.pk}"


def members_describe(
    channel: Channel,
    countries: dict[int, str | None],
    *,
    limit: int | None = None,
    first: int = 0,
) -> list[Member]:
    """Members as others see them. `countries` maps each live member to the country of their
    connection, or None while they share no location: the policy shows a country only to
    those who shared one. A sharing member whose connection has none falls back to the
    country on their profile. With a
    `limit`, a big channel is described in part: `first` (the asking user), the moderators,
    then the others by id, so that a join costs the same in a crowd as in a small channel."""
    return members_describe_many([(channel, countries, limit, first)])[0]


MembersAsk = tuple[Channel, dict[int, str | None], int | None, int]


def members_describe_many(asks: list[MembersAsk]) -> list[list[Member]]:
    """`members_describe` of each (channel, countries, limit, first), their rows read in one
    statement: the joins of a reconnect storm each read their channel's list at once."""
    shown = []
    for channel, countries, limit, first in asks:
        ids = list(countries)
        if limit is not None and len(ids) > limit:
            ids = _members_to_show(channel, ids, limit, first)
        shown.append(ids)
    rows = _member_rows([(channel.pk, ids) for (channel, *_), ids in zip(asks, shown, strict=True)])
    return [
        _described(channel, countries, ids, rows[i])
        for i, ((channel, countries, *_), ids) in enumerate(zip(asks, shown, strict=True))
    ]


def _described(
    channel: Channel,
    countries: dict[int, str | None],
    ids: list[int],
    rows: dict[int, tuple[Any, ...]],
) -> list[Member]:
    members = []
    for uid in ids:
        # A user deleted meanwhile is still described, as before, by id.
        _, nickname, description, country, is_moderator, muted = rows.get(
            uid, (uid, "", "", "", False, False)
        )
        shown = countries[uid]
        cc = "" if shown is None else shown or (country or "").upper()
        members.append(
            Member(
                user_id=uid,
                nickname=nickname or f"user{uid}",
                description=description or "",
                country=cc,
                country_name=country_name(cc),
                flag=flag(cc),
                is_moderator=bool(is_moderator) or uid == channel.creator_id,
                muted=bool(muted),
            )
        )
    return sorted(members, key=lambda m: m.nickname.lower())


def _member_rows(asks: list[tuple[int, list[int]]]) -> list[dict[int, tuple[Any, ...]]]:
    """For each (channel id, user ids): user id -> (user id, nickname, description, country,
    moderator?, muted now?), all in one statement: every join of a reconnect storm reads its
    channel's list, and three querysets (profiles, moderators, mutes) cost more to build and
    compile than PostgreSQL spent running them (benchmarks/reconnect_storm.py's profile)."""
    found: list[dict[int, tuple[Any, ...]]] = [{} for _ in asks]
    params: list[Any] = []
    for i, (channel_id, ids) in enumerate(asks):
        for uid in ids:
            params += [i, channel_id, uid]
    if not params:
        return found
    moderators = Channel.moderators.through._meta.db_table
    values = ", ".join(["(%s, %s, %s)"] * (len(params) // 3))
    sql = f"""
        WITH asked (i, channel_id, user_id) AS (VALUES {values})
        SELECT asked.i, u.id, p.nickname, p.description, p.country,
            EXISTS (
                SELECT 1 FROM {moderators} m
                WHERE m.channel_id = asked.channel_id AND m.user_id = u.id
            ),
            EXISTS (
                SELECT 1 FROM {ChannelSanction._meta.db_table} s
                WHERE s.channel_id = asked.channel_id AND s.user_id = u.id AND s.kind = %s
                AND (s.until IS NULL OR s.until > %s)
            )
        FROM asked
        JOIN {User._meta.db_table} u ON u.id = asked.user_id
        LEFT JOIN {Profile._meta.db_table} p ON p.user_id = u.id
    """  # noqa: S608 (table names from the models, values as parameters)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, SanctionKind.MUTE.value, now])
        for i, *row in cursor.fetchall():
            found[int(i)][row[0]] = tuple(row)
    return found


def _members_to_show(channel: Channel, ids: list[int], limit: int, first: int) -> list[int]:
    mods = set(channel.moderators.filter(pk__in=ids).values_list("pk", flat=True))
    if channel.creator_id in ids:
        mods.add(channel.creator_id)
    ordered = [first, *sorted(mods - {first}), *sorted(set(ids) - mods - {first})]
    return ordered[:limit]


def member_describe(channel: Channel, user_id: int, country: str | None) -> Member:
    return members_describe(channel, {user_id: country})[0]


# --- Redis (live state)
def floor_decode(raw: str | bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    _, _, payload = text.partition("|")
    return json.loads(payload)


async def floor_holder(channel_id: int) -> dict[str, Any] | None:
    """{"tx_id", "user_id", "nickname", "started_at", "mode"} of the talker, or None."""
    return floor_decode(await get_async_redis().get(keys.floor_key(channel_id)))


async def within_range(*, talker_id: int, viewer_id: int, range_km: int) -> bool:
    """Is `viewer_id` within the talker's range now? Yes unless the channel has a range and
    both share a live location farther apart than it (the rule recipients_in_range applies)."""
    if range_km <= 0 or talker_id == viewer_id:
        return True
    if not (await has_location(talker_id) and await has_location(viewer_id)):
        return True
    try:
        km = await get_async_redis().geodist(
            keys.geo_key(), str(talker_id), str(viewer_id), unit="km"
        )
    except redis.ResponseError:
        return True
    return km is None or float(km) <= range_km


async def _named_to(holder: dict[str, Any], *, viewer_id: int, range_km: int) -> bool:
    """May `viewer_id` learn who holds the floor? A listener of the transmission may, and so
    may a member who joined after it began but is in range; a member out of range may not."""
    if holder["user_id"] == viewer_id or await transmissions.may_hear(holder["tx_id"], viewer_id):
        return True
    return await within_range(talker_id=holder["user_id"], viewer_id=viewer_id, range_km=range_km)


async def talker_of(channel_id: int, *, viewer_id: int, range_km: int) -> Talker | None:
    """Who talks now, as `viewer_id` may know it: named only to those in the talker's range."""
    holder = await floor_holder(channel_id)
    if holder is None:
        return None
    return await _talker_named(holder, viewer_id=viewer_id, range_km=range_km)


async def _talker_named(holder: dict[str, Any], *, viewer_id: int, range_km: int) -> Talker:
    if not await _named_to(holder, viewer_id=viewer_id, range_km=range_km):
        return Talker(user_id=None, nickname="", tx_id=holder["tx_id"], in_range=False)
    return Talker(user_id=holder["user_id"], nickname=holder["nickname"], tx_id=holder["tx_id"])


async def busy_reason(holder: dict[str, Any] | None, *, viewer_id: int, range_km: int) -> str:
    """Why a press was refused, naming the talker only to those in their range."""
    if holder is None:
        return "someone is talking"
    if await _named_to(holder, viewer_id=viewer_id, range_km=range_km):
        return f"{holder['nickname']} is talking"
    return "someone out of your range is talking"


async def live_members(channel_id: int) -> dict[int, str]:
    """user id -> connection country of everyone with a live socket in the channel now.

    A socket whose process died is removed by a survivor within seconds
    (services.process_dead_release); until then realtime's presence (refreshed by every
    heartbeat, expiring otherwise) says which sockets are still alive, so a dead one
    neither shows as a member nor counts as a listener. A selector: it never writes."""
    r = get_async_redis()
    k = keys.sockets_key(channel_id)
    entries = {sock: json.loads(value) for sock, value in (await r.hgetall(k)).items()}
    if not entries:
        return {}
    async with r.pipeline(transaction=False) as p:
        for sock, entry in entries.items():
            p.zscore(presence_key(int(entry["user_id"])), sock)
        expiries = await p.execute()
    now = time.time()
    members: dict[int, str] = {}
    for entry, expiry in zip(entries.values(), expiries, strict=True):
        if expiry is None or expiry < now:
            continue
        uid = int(entry["user_id"])
        members[uid] = members.get(uid) or entry["country"]
    return members


async def recent_transmissions(channel_id: int, *, viewer_id: int) -> list[RecentTx]:
    """Finished transmissions of the channel whose audio the server still holds and that
    `viewer_id` may fetch (heard live, or would have): a late joiner or a member out of
    range is offered nothing it would be refused."""
    return _recent_described(await transmissions.recent(channel_id, hearer=viewer_id))


@dataclass(frozen=True)
class JoinSnapshot:
    """What a join tells the joiner of the channel's live state (`join_snapshot_of`)."""

    located: bool  # the user shares a location
    talker: Talker | None  # `talker_of`
    recent: list[RecentTx]  # `recent_transmissions`
    sanctions_version: bytes | None  # the channel's, for its bans (voice.floor.bans_prepare)


@dataclass(frozen=True)
class JoinState:
    """The live state a join reads (raw, as Redis answers): whether the user shares a
    location, the floor's value, the channel's recent transmission ids, its sanctions
    version. One round trip: `join_state`, or voice.services.channel_socket_enter."""

    located: bool
    floor_raw: str | bytes | None
    tx_ids: list[Any]
    sanctions_version: str | bytes | None


async def join_state(channel_id: int, *, viewer_id: int) -> JoinState:
    """The live state a join reads, in one round trip: a reconnect storm's every join asked
    them one at a time (three round trips, and redis-py's work for each command, of the 2 %
    each a storm's profile showed)."""
    async with get_async_redis().pipeline(transaction=False) as pipe:
        pipe.exists(keys.location_key(viewer_id))
        pipe.get(keys.floor_key(channel_id))
        pipe.zrange(keys.recent_key(channel_id), 0, -1)
        pipe.get(keys.channel_sanctions_version_key(channel_id))
        located, floor_raw, tx_ids, version = await pipe.execute()
    return JoinState(bool(located), floor_raw, tx_ids, version)


async def join_snapshot_of(state: JoinState, *, viewer_id: int, range_km: int) -> JoinSnapshot:
    """What a join tells the joiner of the channel's live state (`state`), and the channel's
    sanctions version (its presses' bans are read at the join, not at a press)."""
    talker = None
    holder = floor_decode(state.floor_raw)
    if holder is not None:
        talker = await _talker_named(holder, viewer_id=viewer_id, range_km=range_km)
    recent = _recent_described(await transmissions.recent_of(state.tx_ids, hearer=viewer_id))
    version = state.sanctions_version
    version = version.encode() if isinstance(version, str) else version
    return JoinSnapshot(state.located, talker, recent, version)


def _recent_described(metas: list[dict[str, Any]]) -> list[RecentTx]:
    recent = []
    for meta in metas:
        if "duration_ms" not in meta:
            continue  # still on air: the joiner sees it as the talker instead
        recent.append(
            RecentTx(
                tx_id=meta["tx_id"],
                user_id=meta["talker_id"],
                nickname=meta.get("nickname", ""),
                started_at=meta["started_at"],
                duration_ms=meta["duration_ms"],
            )
        )
    return recent


async def transmission_replay(tx_id: int, *, viewer_id: int) -> tuple[dict[str, Any], list[bytes]]:
    """What tx.fetch sends: (who talked, the packets still stored), for a member of the
    channel who was a listener of it (or its talker); ServiceError says why not."""
    stored = await transmissions.replay(tx_id)
    if stored is None:
        raise ServiceError("not_found", "that transmission is no longer on the server")
    meta, packets = stored
    allowed = await database_sync_to_async(is_member)(meta["channel_id"], viewer_id)
    if not allowed or not await transmissions.may_hear(tx_id, viewer_id):
        raise NotAllowed("you were not a listener of that transmission")
    about = {
        "tx_id": tx_id,
        "user_id": meta["talker_id"],
        "nickname": meta.get("nickname", ""),
        "mode": meta.get("mode", "webcodecs"),
    }
    return about, packets


async def has_location(user_id: int) -> bool:
    return bool(await get_async_redis().exists(keys.location_key(user_id)))


def banned_among(channel_id: int, user_ids: Iterable[int]) -> set[int]:
    """Which of `user_ids` are banned from the channel now."""
    ids = list(user_ids)
    if not ids:
        return set()
    return set(
        ChannelSanction.objects.filter(
            channel_id=channel_id, user_id__in=ids, kind=SanctionKind.BAN
        )
        .filter(Q(until__isnull=True) | Q(until__gt=timezone.now()))
        .values_list("user_id", flat=True)
    )


def channel_bans_until(channel_id: int) -> dict[int, int | None]:
    """Banned user id -> ban end in epoch ms (None: until lifted), for every ban of the
    channel that has not run out: O(bans), never O(members)."""
    return channels_bans_until([channel_id])[channel_id]


def channels_bans_until(channel_ids: Iterable[int]) -> dict[int, dict[int, int | None]]:
    """`channel_bans_until` of several channels in one query (every one listed is a key)."""
    out: dict[int, dict[int, int | None]] = {cid: {} for cid in channel_ids}
    rows = (
        ChannelSanction.objects.filter(channel_id__in=list(out), kind=SanctionKind.BAN)
        .filter(Q(until__isnull=True) | Q(until__gt=timezone.now()))
        .values_list("channel_id", "user_id", "until")
    )
    for cid, uid, until in rows:
        out[cid][uid] = None if until is None else int(until.timestamp() * 1000)
    return out


async def recipients_in_range(
    *, channel_id: int, talker_id: int, members: Iterable[int], range_km: int
) -> set[int]:
    """Who hears the talker: never a banned member (a ban written past the services tells no
    socket); range narrows only when both talker and listener share a live location; a
    listener without one hears channel-wide, as does everyone when the talker has none or
    the channel is unlimited (range 0)."""
    listeners = {uid for uid in members if uid != talker_id}
    listeners -= await database_sync_to_async(banned_among)(channel_id, listeners)
    if range_km <= 0 or not listeners or not await has_location(talker_id):
        return listeners
    r = get_async_redis()
    ordered = sorted(listeners)
    async with r.pipeline(transaction=False) as p:
        for uid in ordered:
            p.exists(keys.location_key(uid))
        located = await p.execute()
    try:
        near = await r.geosearch(
            keys.geo_key(),
            member=str(talker_id),
            radius=range_km,
            unit="km",
        )
    except redis.ResponseError:
        # The talker's GEO entry vanished between the two reads: treat as no location.
        return listeners
    near_ids = {int(m) for m in near if isinstance(m, bytes | str)}
    return {uid for uid, loc in zip(ordered, located, strict=True) if not loc or uid in near_ids}
