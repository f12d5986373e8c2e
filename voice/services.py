"""Every write of CBLINE.

SQL writes are sync and transactional (consumers call them through database_sync_to_async)
and announce themselves with send_on_commit. Live-state writes (who is in a channel now,
locations) are async and go to Redis only: the privacy policy promises that location and
audio never reach durable storage. The floor is voice/floor.py's; audio and transmission
meta are voice/transmissions.py's, published through voice/relay.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import ipaddress
import json
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import iptocc
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Field
from django.utils import timezone

from accounts.models import Device, Profile, User
from realtime import opening
from realtime.batching import Batcher, PerLoop
from realtime.dbpool import pooled
from realtime.errors import NotAllowed, ServiceError
from realtime.events import send_now, send_on_commit
from realtime.fanout import Script, run_script
from realtime.keys import presence_key
from realtime.ratelimit import allow_async
from realtime.redis import get_async_redis, get_redis

from . import events, keys, selectors
from .floor import Floor, end_transmission
from .keys import channel_group
from .models import Channel, ChannelMembership, ChannelSanction, ConnectionLog, SanctionKind
from .schemas import Member
from .selectors import (
    JoinState,
    channel_admission,
    channel_admissions,
    channel_get,
    floor_decode,
    is_moderator,
)

# iptocc >= 3 names it country_code; older releases get_country_code.
_IPTOCC_NAMES = ("country_code", "get_country_code")
_ip_country: Callable[[str], str | None] = next(
    getattr(iptocc, name) for name in _IPTOCC_NAMES if hasattr(iptocc, name)
)

MAX_RANGE_KM = 20_000  # half the Earth's circumference: anything larger means "everywhere"
# A ranged channel tells each member whether a talker is within its range (floor.taken's
# in_range, and the audio itself). A narrow range lets a few accounts at chosen points box a
# talker in to a km or two; the product promises to use only a coarse location. 25 km (a
# town and its surroundings) keeps that answer coarse, and still narrows a channel to a region.
MIN_RANGE_KM = 25


# --- channels (SQL)
def channel_fields_clean(
    *, name: str, range_km: int, description: str = "", channel_id: int | None = None
) -> tuple[str, str]:
    """(name, description) as a channel keeps them, or ServiceError: a name of 1 to 64
    characters (spaces tidied) that no other channel has in any case, a range of 0 or
    MIN_RANGE_KM to MAX_RANGE_KM. The admin's form runs this too, so staff see the same refusals."""
    name = " ".join(name.split())
    if not 1 <= len(name) <= 64:
        raise ServiceError("invalid", "a channel name has 1 to 64 characters")
    if not 0 <= range_km <= MAX_RANGE_KM:
        raise ServiceError("invalid", f"range is 0 (unlimited) to {MAX_RANGE_KM} km")
    if 0 < range_km < MIN_RANGE_KM:
        raise ServiceError(
            "invalid", f"a channel's range is 0 (unlimited) or at least {MIN_RANGE_KM} km"
        )
    others = Channel.objects.filter(name__iexact=name)
    if channel_id is not None:
        others = others.exclude(pk=channel_id)
    if others.exists():
        raise ServiceError("name_taken", "a channel with that name exists")
    return name, description.strip()[:300]


def _channel_save(channel: Channel) -> None:
    try:
        channel.full_clean()
        with transaction.atomic():
            channel.save()
    except (ValidationError, IntegrityError):
        raise ServiceError("name_taken", "a channel with that name exists") from None


@transaction.atomic
def channel_create(
    *,
    creator: User | None,
    name: str,
    description: str = "",
    password: str = "",
    range_km: int = 0,
) -> Channel:
    """A new channel; its creator is its first member and moderator (staff may make one
    without a creator in the admin). The password is kept only as a channel password hash."""
    name, description = channel_fields_clean(name=name, range_km=range_km, description=description)
    channel = Channel(
        name=name,
        description=description,
        password_hash=channel_password_hash(password) if password else "",
        range_km=range_km,
        creator=creator,
    )
    _channel_save(channel)
    if creator is not None:
        channel.moderators.add(creator)
        ChannelMembership.objects.create(channel=channel, user=creator)
    return channel


@transaction.atomic
def channel_update(
    *,
    channel_id: int,
    name: str,
    description: str,
    range_km: int,
    creator: User | None,
    moderators: Iterable[User],
    password: str = "",
    make_public: bool = False,
) -> Channel:
    """Staff edit a channel in the admin, under channel_create's rules. A new `password` is
    hashed the channel way; `make_public` drops it. Members stay members either way."""
    channel = Channel.objects.select_for_update().get(pk=channel_id)
    channel.name, channel.description = channel_fields_clean(
        name=name, range_km=range_km, description=description, channel_id=channel_id
    )
    channel.range_km = range_km
    channel.creator = creator
    if make_public:
        channel.password_hash = ""
    elif password:
        channel.password_hash = channel_password_hash(password)
    _channel_save(channel)
    channel.moderators.set(moderators)
    return channel


@transaction.atomic
def channel_delete(*, channel_id: int) -> None:
    """Staff delete a channel (the admin): its memberships and sanctions go with it, and
    every socket in it leaves once that commits (its talker loses the floor, announced as
    moderated)."""
    channel_get(channel_id).delete()
    send_on_commit(keys.channel_group(channel_id), events.ChannelClosed(channel_id=channel_id))


# --- channel passwords
# A channel password guards a room for a join, not an account: it is checked on every join
# attempt, so its cost must fit a join (about a millisecond), not a login (Django's
# PBKDF2 with a million iterations took ~1 s on the database thread and stalled everyone's
# joins). Guessing online is held back by CHANNEL_PASSWORD_ATTEMPTS per user and channel,
# counted before any hashing; guessing offline from a leaked database needs the pepper too,
# a server secret that is not in the database. Hence a few PBKDF2 rounds keyed by the pepper.
CHANNEL_HASH_ALGORITHM = "cbline-pbkdf2-sha256"
CHANNEL_HASH_ITERATIONS = 1_000  # about 1 ms here
CHANNEL_PASSWORD_ATTEMPTS = 5  # burst per user and channel...
CHANNEL_PASSWORD_ATTEMPTS_PER_MINUTE = 5  # ...then this many a minute


def _channel_pepper() -> bytes:
    pepper: str = settings.VOICE_CHANNEL_PASSWORD_PEPPER or settings.SECRET_KEY
    return hashlib.sha256(b"cbline-channel-password:" + pepper.encode()).digest()


def _channel_digest(password: str, salt: str, iterations: int) -> str:
    key = hmac.new(_channel_pepper(), password.encode(), hashlib.sha256).digest()
    raw = hashlib.pbkdf2_hmac("sha256", key, salt.encode(), iterations)
    return base64.b64encode(raw).decode()


def channel_password_hash(password: str) -> str:
    salt = secrets.token_urlsafe(12)
    digest = _channel_digest(password, salt, CHANNEL_HASH_ITERATIONS)
    return f"{CHANNEL_HASH_ALGORITHM}${CHANNEL_HASH_ITERATIONS}${salt}${digest}"


def channel_password_verify(password: str, stored: str) -> bool:
    """CPU work, no database: callers run it off the database thread. Hashes made before
    this scheme (Django's password hashers) still verify."""
    algorithm, _, rest = stored.partition("$")
    if algorithm != CHANNEL_HASH_ALGORITHM:
        return check_password(password, stored)
    iterations, salt, digest = rest.split("$", 2)
    return hmac.compare_digest(_channel_digest(password, salt, int(iterations)), digest)


def channel_password_check(*, channel: Channel, password: str | None) -> bool:
    return not channel.is_protected or bool(
        password and channel_password_verify(password, channel.password_hash)
    )


def channel_join(
    *, channel_id: int, user: User, password: str | None, password_ok: bool = False
) -> Channel:
    """Admit the user to the channel: not while banned; a protected channel wants its
    password unless the user is a member already (so a reconnect needs no password).
    `password_ok`: the caller verified the password already (channel_admit, off this thread).
    One query for a member (a reconnect), two for a newcomer, no transaction: the insert
    is one statement that a concurrent join of the same user cannot make fail."""
    admitted = _channel_join_or_hash(channel_id=channel_id, user=user)
    channel = admitted.channel
    if admitted.password_hash and not (
        password_ok or channel_password_check(channel=channel, password=password)
    ):
        code = "wrong_password" if password else "password_required"
        raise NotAllowed("wrong channel password", code=code)
    if admitted.password_hash:
        _membership_add(channel, user)
    return channel


@dataclass(frozen=True)
class Admission:
    channel: Channel
    # The user's sanctions in the channel now (selectors.sanctions_until's shape): the
    # socket's floor keeps them, so its first press reads nothing.
    sanctions: dict[str, int | None]
    password_hash: str = ""  # set: not admitted until the channel's password is given


def _membership_add(channel: Channel, user: User) -> None:
    ChannelMembership.objects.bulk_create(
        [ChannelMembership(channel=channel, user=user)], ignore_conflicts=True
    )


def _channel_join_or_hash(*, channel_id: int, user: User) -> Admission:
    """Admit the user if no password is needed. When the user must give the protected
    channel's password first, the Admission carries its stored hash: not admitted yet."""
    return _admitted(*channel_admission(channel_id, user.pk), user=user)


def _channels_join_or_hash(asks: list[tuple[int, User]]) -> list[Admission | Exception]:
    """`_channel_join_or_hash` of each (channel id, user), their reads in one statement; an
    ask that is refused or fails gets its exception."""
    found = channel_admissions([(channel_id, user.pk) for channel_id, user in asks])
    admitted: list[Admission | Exception] = []
    for read, (_, user) in zip(found, asks, strict=True):
        if isinstance(read, Exception):
            admitted.append(read)
            continue
        try:
            admitted.append(_admitted(*read, user=user))
        except Exception as exc:  # the ask's own failure, not the batch's
            admitted.append(exc)
    return admitted


def _admitted(
    channel: Channel, sanctions: dict[str, int | None], member: bool, *, user: User
) -> Admission:
    if SanctionKind.BAN in sanctions:
        raise NotAllowed("you are banned from this channel", code="banned")
    if member:
        return Admission(channel, sanctions)
    if channel.is_protected:
        return Admission(channel, sanctions, channel.password_hash)
    _membership_add(channel, user)
    return Admission(channel, sanctions)


class _Admitter(Batcher[tuple[int, User]]):
    """The admissions asked while one batch is on its way go together: one statement and one
    database hop a batch (a reconnect storm's every socket rejoins at once; a hop each cost
    the event loop more than the read itself)."""

    async def send_batch(self, items: list[tuple[int, User]]) -> list[Any]:
        return await pooled(_channels_join_or_hash)(items)


_admitter = PerLoop(_Admitter)


class _MembersReader(Batcher[selectors.MembersAsk]):
    """The member lists asked while one batch is on its way are read together: one statement
    and one database hop a batch (every join of a reconnect storm reads its channel's)."""

    async def send_batch(self, items: list[selectors.MembersAsk]) -> list[Any]:
        return await pooled(selectors.members_describe_many)(items)


_members_reader = PerLoop(_MembersReader)


async def members_describe(
    channel: Channel,
    countries: dict[int, str | None],
    *,
    limit: int | None = None,
    first: int = 0,
) -> list[Member]:
    """selectors.members_describe for a socket, with the other sockets' asked meanwhile."""
    members: list[Member] = await _members_reader.get().call((channel, countries, limit, first))
    return members


async def channel_admit(*, channel_id: int, user: User, password: str | None) -> Admission:
    """channel_join for a socket: one database call for a member or an open channel (on the
    pool of realtime.dbpool, not the one database thread, with the other sockets' asked
    meanwhile); a password is checked after the attempt limit and outside the database
    threads."""
    admitted: Admission = await _admitter.get().call((channel_id, user))
    stored = admitted.password_hash
    if not stored:
        return admitted
    if not password:
        raise NotAllowed("this channel wants its password", code="password_required")
    if not await allow_async(
        keys.password_attempts_key(channel_id, user.pk),
        capacity=CHANNEL_PASSWORD_ATTEMPTS,
        per_second=CHANNEL_PASSWORD_ATTEMPTS_PER_MINUTE / 60,
    ):
        raise ServiceError(
            "too_many_attempts", "too many password attempts; try again in a minute", status=429
        )
    verify = sync_to_async(channel_password_verify, thread_sensitive=False)
    if not await verify(password, stored):
        raise NotAllowed("wrong channel password", code="wrong_password")
    if not stored.startswith(CHANNEL_HASH_ALGORITHM + "$"):
        # A hash from before this scheme: the password is known now, store it the new way.
        new_hash = await sync_to_async(channel_password_hash, thread_sensitive=False)(password)
        await database_sync_to_async(
            Channel.objects.filter(pk=channel_id, password_hash=stored).update
        )(password_hash=new_hash)
    channel = await pooled(channel_join)(
        channel_id=channel_id, user=user, password=None, password_ok=True
    )
    return Admission(channel, admitted.sanctions)


@dataclass(frozen=True)
class Moderation:
    action: str  # muted | unmuted | kicked | banned | unbanned
    until: dt.datetime | None


_ACTIONS = {
    "mute": "muted",
    "unmute": "unmuted",
    "kick": "kicked",
    "ban": "banned",
    "unban": "unbanned",
}


def channel_member_moderate_check(*, channel: Channel, moderator: User, target_id: int) -> None:
    """May `moderator` act on `target_id` in `channel`? ServiceError says why not. The admin's
    form runs this too, so staff see the same refusals as a moderator's socket."""
    if not (moderator.is_staff or is_moderator(channel, moderator.pk)):
        raise NotAllowed("only the channel's moderators may do that")
    if target_id == moderator.pk:
        raise ServiceError("invalid", "you cannot moderate yourself")
    if not User.objects.filter(pk=target_id).exists():
        raise ServiceError("not_found", "no such user", status=404)
    if target_id == channel.creator_id:
        raise NotAllowed("the channel's creator cannot be moderated")


@transaction.atomic
def channel_member_moderate(
    *,
    channel_id: int,
    moderator: User,
    target_id: int,
    action: str,
    minutes: int = 0,
    until: dt.datetime | None = None,
) -> Moderation:
    """Mute, unmute, kick, ban or unban a member, from a moderator's socket or the admin
    (`until` instead of `minutes` there). Kick and ban take the membership away (a protected
    channel wants its password again). The target's own sockets hear of it through their
    voice group and act at once (leave, drop the floor, re-announce themselves (un)muted):
    one event, not one per listener."""
    if action not in _ACTIONS:
        raise ServiceError("invalid", "unknown moderation action")
    channel = channel_get(channel_id)
    channel_member_moderate_check(channel=channel, moderator=moderator, target_id=target_id)
    if until is None and minutes:
        until = timezone.now() + dt.timedelta(minutes=minutes)
    if action in ("mute", "ban"):
        ChannelSanction.objects.update_or_create(
            channel=channel,
            user_id=target_id,
            kind=SanctionKind.MUTE if action == "mute" else SanctionKind.BAN,
            defaults={"until": until, "created_by": moderator},
        )
    if action in ("unmute", "unban"):
        kind = SanctionKind.MUTE if action == "unmute" else SanctionKind.BAN
        deleted, _ = ChannelSanction.objects.filter(
            channel=channel, user_id=target_id, kind=kind
        ).delete()
        if not deleted:
            raise ServiceError(
                f"not_{_ACTIONS[action][2:]}", f"that member is not {kind.label.lower()}"
            )
    if action in ("kick", "ban"):
        ChannelMembership.objects.filter(channel=channel, user_id=target_id).delete()
        if action == "ban":
            channel.moderators.remove(target_id)
    result = Moderation(action=_ACTIONS[action], until=until if action in ("mute", "ban") else None)
    send_on_commit(
        keys.voice_user_group(target_id),
        events.Moderated(
            channel_id=channel.pk,
            action=result.action,
            until=int(result.until.timestamp() * 1000) if result.until else None,
        ),
    )
    return result


SANCTIONS_VERSION_TTL_SECONDS = 30 * 24 * 3600  # gone: sockets reload, nothing is lost


def sanctions_bump(user_id: int, channel_id: int | None = None) -> None:
    """Tell every socket of the user that its cached sanctions are stale, and every process
    that its cached bans of the channel are."""
    names = [keys.sanctions_version_key(user_id)]
    if channel_id is not None:
        names.append(keys.channel_sanctions_version_key(channel_id))
    with get_redis().pipeline(transaction=False) as pipe:
        for name in names:
            pipe.incr(name)
            pipe.expire(name, SANCTIONS_VERSION_TTL_SECONDS)
        pipe.execute()


# --- identity (the CBLINE nickname and description are the account's profile)
@transaction.atomic
def identity_update(*, user: User, nickname: str, description: str = "") -> Profile:
    nickname = " ".join(nickname.split())
    if not 1 <= len(nickname) <= 32:
        raise ServiceError("invalid", "a nickname has 1 to 32 characters")
    profile, _ = Profile.objects.get_or_create(user=user)
    profile.nickname = nickname
    profile.description = " ".join(description.split())[:200]
    profile.full_clean(validate_unique=False, exclude=["photo"])
    profile.save(update_fields=["nickname", "description", "updated_at"])
    # Every CBLINE socket of the user re-announces itself to its channel.
    send_on_commit(keys.voice_user_group(user.pk), events.IdentityChanged())
    return profile


# --- connection log (SQL)
def ip_country(ip: str | None) -> str:
    """ISO code of the address's country; "" for loopback, private and unknown addresses."""
    if not ip:
        return ""
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return ""
    return (_ip_country(ip) or "").upper()


def connection_log_write(
    *, user_id: int, ip: str | None, device: Device | None = None, nickname: str | None = None
) -> ConnectionLog:
    """The policy's server log line for one connect: timestamp, IP, nickname, user id, the
    unique identifier of the device (issued by the server at login, the socket's own), its
    make, model, platform and client version, and the IP's country for the aggregates.
    One insert (sockets write theirs through `connection_log_add`, in batches)."""
    if nickname is None:
        profile = Profile.objects.filter(user_id=user_id).only("nickname").first()
        nickname = profile.nickname if profile else ""
    entry = _connection_log_entry(user_id=user_id, ip=ip, device=device, nickname=nickname)
    _connection_log_insert([entry])
    return entry


async def connection_log_add(
    *, user_id: int, ip: str | None, device: Device | None, nickname: str
) -> str:
    """`connection_log_write` for a socket's connect (with the `nickname` its session read
    loaded): the connects that come while a batch is on its way are written together, one
    INSERT and one database hop a batch, not one each (a reconnect storm). Returns the
    connection's country, once its row is written."""
    entry = _connection_log_entry(user_id=user_id, ip=ip, device=device, nickname=nickname)
    await _log_writer.get().call(entry)
    return entry.country


def _connection_log_entry(
    *, user_id: int, ip: str | None, device: Device | None, nickname: str
) -> ConnectionLog:
    try:
        ipaddress.ip_address(ip or "")
    except ValueError:
        ip = None
    return ConnectionLog(
        created_at=timezone.now(),
        ip=ip,
        nickname=nickname,
        user_id=user_id,
        device_uid=device.device_id if device else "",
        device_make=device.make if device else "",
        device_model=device.model if device else "",
        platform=device.platform if device else "",
        client_version=device.client_version if device else "",
        country=ip_country(ip),
    )


class _LogWriter(Batcher[ConnectionLog]):
    async def send_batch(self, items: list[ConnectionLog]) -> list[Any]:
        await pooled(_connection_log_insert)(items)
        return [None] * len(items)


_log_writer = PerLoop(_LogWriter)


# Rows per INSERT where each row is its own parameters (PostgreSQL takes at most 65,535 a
# statement; its own INSERT takes a column's values as one array parameter instead).
_LOG_ROWS_PER_INSERT = 500


@functools.cache
def _connection_log_sql(vendor: str) -> tuple[list[Field[Any, Any]], str]:
    """The log's fields and its INSERT, built once a process. On PostgreSQL the rows come as
    one array per column (`unnest`): the statement is the same for any batch, so psycopg
    converts it once, not per batch (a batch's own VALUES list was too long to be cached and
    cost a storm's servers 6 % of their CPU in the driver's query conversion)."""
    fields = [f for f in ConnectionLog._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(str(f.column) for f in fields)
    head = f"INSERT INTO {ConnectionLog._meta.db_table} ({columns}) "
    if vendor != "postgresql":
        return fields, head + "VALUES "
    # As Django's own bulk_create on PostgreSQL: varchar[], not varchar(32)[].
    arrays = ", ".join(f"%s::{str(f.db_type(connection)).split('(')[0]}[]" for f in fields)
    pk = ConnectionLog._meta.pk.column
    sql = f"{head}SELECT * FROM unnest({arrays}) RETURNING {pk}"  # noqa: S608 (model names)
    return fields, sql


def _connection_log_insert(entries: list[ConnectionLog]) -> None:
    """Write `entries` and set their keys. A fixed statement, not the ORM's: it built and
    compiled the INSERT per socket, which cost a reconnect storm's servers more CPU than
    PostgreSQL's work on it."""
    fields, sql = _connection_log_sql(connection.vendor)
    if connection.vendor == "postgresql":
        columns = [
            [f.get_db_prep_save(getattr(entry, f.attname), connection) for entry in entries]
            for f in fields
        ]
        with connection.cursor() as cursor:
            cursor.execute(sql, columns)
            ids = [r[0] for r in cursor.fetchall()]
        # In the arrays' order, as bulk_create's keys from its own unnest INSERT.
        _connection_log_keys(entries, ids)
        return
    returning = connection.features.can_return_columns_from_insert
    per_insert = _LOG_ROWS_PER_INSERT if returning else 1  # else each row's lastrowid
    row = f"({', '.join(['%s'] * len(fields))})"
    for start in range(0, len(entries), per_insert):
        chunk = entries[start : start + per_insert]
        chunk_sql = sql + ", ".join([row] * len(chunk))
        if returning:
            chunk_sql += f" RETURNING {ConnectionLog._meta.pk.column}"
        params = [
            f.get_db_prep_save(getattr(entry, f.attname), connection)
            for entry in chunk
            for f in fields
        ]
        with connection.cursor() as cursor:
            cursor.execute(chunk_sql, params)
            ids = [r[0] for r in cursor.fetchall()] if returning else [cursor.lastrowid]
        _connection_log_keys(chunk, ids)


def _connection_log_keys(entries: list[ConnectionLog], ids: list[Any]) -> None:
    for entry, pk in zip(entries, ids, strict=True):
        entry.pk = int(pk)
        entry._state.adding = False
        entry._state.db = connection.alias


def connection_log_purge(*, older_than_days: int, batch_size: int = 1000) -> int:
    """Delete log rows older than the retention period, one short transaction per batch so
    a large backlog never holds a long lock. Returns how many rows went."""
    cutoff = timezone.now() - dt.timedelta(days=older_than_days)
    deleted = 0
    while True:
        ids = list(
            ConnectionLog.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[
                :batch_size
            ]
        )
        if not ids:
            return deleted
        with transaction.atomic():
            deleted += ConnectionLog.objects.filter(pk__in=ids).delete()[0]


# --- live state (Redis)
# A socket joins: who is live in the channel (each socket's presence entry not expired, as
# selectors.live_members reads it) and whether this is the user's first socket there, read
# and the socket added in one step inside Redis. Read from Python this was a command per
# socket already in the channel for every join: O(members²) a channel in a reconnect storm.
# The presence and location keys are the members' own (realtime.keys.presence_key,
# keys.location_key), not declared: one Redis, as the floor's and matchmaking's steps assume.
_SOCKET_JOIN = """
local socket, uid, now, presence = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local first, count, live = 1, 1, {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= socket then
    count = count + 1
    local entry = cjson.decode(all[i + 1])
    local id = tostring(entry.user_id)
    if id == uid then first = 0 end
    local expiry = redis.call('ZSCORE', presence .. id, all[i])
    if expiry and tonumber(expiry) >= now then
      live[#live + 1] = id
      -- The country is shown only while the member shares a location (false: not shown).
      if redis.call('EXISTS', ARGV[8] .. id) == 1 then
        live[#live + 1] = entry.country
      else
        live[#live + 1] = false
      end
    end
  end
end
redis.call('HSET', KEYS[1], socket, ARGV[5])
if #KEYS > 1 then
  redis.call('HSET', KEYS[2], socket, ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[7])
end
return {first, count, live}
"""
_PRESENCE_PREFIX = presence_key(0).removesuffix("0")  # + a user id: that user's key
_LOCATION_PREFIX = keys.location_key(0).removesuffix("0")  # the same for locations


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def channel_socket_join(
    *, channel_id: int, socket: str, user_id: int, country: str, process_id: str = ""
) -> tuple[bool, int, dict[int, str | None]]:
    """Record a socket as joined (listed under its process for realtime.liveness). Returns
    (whether it is the user's first socket in the channel, how many sockets it has now, user
    id -> the country others may see of everyone else live in it before this socket came:
    their connection's, or None for a member who shares no location)."""
    names = [keys.sockets_key(channel_id)]
    if process_id:
        names.append(keys.process_sockets_key(process_id))
    first, count, flat = await get_async_redis().eval(
        _SOCKET_JOIN, len(names), *names, *_join_args(channel_id, socket, user_id, country)
    )
    return bool(first), int(count), _live_countries(flat)


def _join_args(channel_id: int, socket: str, user_id: int, country: str) -> list[Any]:
    """_SOCKET_JOIN's arguments (ARGV[1..8]), for it alone and inside _SOCKET_ENTER."""
    return [
        socket,
        user_id,
        time.time(),
        _PRESENCE_PREFIX,
        json.dumps({"user_id": user_id, "country": country}),
        channel_id,
        settings.LIVENESS_SOCKETS_KEEP_SECONDS,
        _LOCATION_PREFIX,
    ]


def _live_countries(flat: list[Any]) -> dict[int, str | None]:
    """_SOCKET_JOIN's flat [user id, country or nil, ...] as user id -> country (a user's
    first non-empty country wins; None: they share no location)."""
    live: dict[int, str | None] = {}
    for i in range(0, len(flat), 2):
        uid = int(flat[i])
        country = None if flat[i + 1] is None else _text(flat[i + 1])
        live[uid] = live.get(uid) or country
    return live


# A socket's join in one round trip, on the connect's lean connection (realtime.opening):
# the channel's group (as the layer's group_add: KEYS[3], ARGV[9] its expiry), the socket
# (_SOCKET_JOIN, its process's hash always given), then the snapshot the joiner is sent (the
# user's location flag KEYS[4], the floor KEYS[5], recent transmissions KEYS[6], the
# channel's sanctions version KEYS[7]). One script: nothing said after the group is joined
# is missing from the snapshot. They were four round trips on redis-py (group, socket,
# snapshot pipeline; its command work was a tenth of a storm's server CPU).
_SOCKET_ENTER = Script.of(
    """
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[9])
local joined = (function()
"""
    + _SOCKET_JOIN
    + """
end)()
return {joined[1], joined[2], joined[3], redis.call('EXISTS', KEYS[4]),
  redis.call('GET', KEYS[5]), redis.call('ZRANGE', KEYS[6], 0, -1), redis.call('GET', KEYS[7])}
"""
)


@dataclass(frozen=True)
class Entered:
    """channel_socket_enter's answer: channel_socket_join's, and the join's snapshot."""

    first: bool
    sockets: int
    live: dict[int, str | None]
    snapshot: JoinState


def channel_socket_enter_supported() -> bool:
    return opening.supported()


async def channel_socket_enter(
    *, channel_id: int, socket: str, user_id: int, country: str, process_id: str
) -> Entered:
    """The socket joins the channel's group and is recorded as joined (channel_socket_join),
    and the channel's live state is read for its snapshot (selectors.join_state), in one
    step. Only when `channel_socket_enter_supported()`."""
    names: list[str | bytes] = [
        keys.sockets_key(channel_id),
        keys.process_sockets_key(process_id),
        opening.group_key(channel_group(channel_id)),
        keys.location_key(user_id),
        keys.floor_key(channel_id),
        keys.recent_key(channel_id),
        keys.channel_sanctions_version_key(channel_id),
    ]
    reply = await run_script(
        await opening.script_connection(),
        _SOCKET_ENTER,
        len(names),
        *names,
        *_join_args(channel_id, socket, user_id, country),
        opening.group_expiry(),
    )
    first, count, flat, located, floor_raw, tx_ids, version = reply
    state = JoinState(bool(located), floor_raw, list(tx_ids), version)
    return Entered(bool(first), int(count), _live_countries(flat), state)


async def channel_socket_add(
    *, channel_id: int, socket: str, user_id: int, country: str, process_id: str = ""
) -> tuple[bool, int]:
    """channel_socket_join without the live members."""
    first, count, _ = await channel_socket_join(
        channel_id=channel_id,
        socket=socket,
        user_id=user_id,
        country=country,
        process_id=process_id,
    )
    return first, count


async def channel_socket_remove(
    *, channel_id: int, socket: str, user_id: int, process_id: str = ""
) -> tuple[bool, int]:
    """Forget a socket. Returns (whether it was the user's last socket in the channel, how
    many sockets the channel has left)."""
    r = get_async_redis()
    k = keys.sockets_key(channel_id)
    async with r.pipeline(transaction=True) as p:
        p.hdel(k, socket)
        p.hvals(k)
        if process_id:
            p.hdel(keys.process_sockets_key(process_id), socket)
        after = (await p.execute())[1]
    return all(json.loads(v)["user_id"] != user_id for v in after), len(after)


async def process_dead_release(process_id: str, sockets: Mapping[str, object]) -> None:
    """realtime.liveness hook: a process died holding CBLINE state. Its floors are released
    and announced (floor.released, reason "disconnected"), its sockets leave their
    channels, members whose last socket it was are announced gone, and the locations its
    sockets shared are cleared."""
    r = get_async_redis()
    async with r.pipeline(transaction=False) as p:
        p.hgetall(keys.process_floors_key(process_id))
        p.hgetall(keys.process_sockets_key(process_id))
        floors, joined = await p.execute()
    for channel, value in floors.items():
        holder = floor_decode(value)
        if holder is None:
            continue
        floor = Floor(
            int(holder["tx_id"]),
            int(holder["user_id"]),
            holder.get("nickname", ""),
            int(holder["started_at"]),
            holder.get("mode", ""),
            process_id,
        )
        await end_transmission(int(channel), floor, "disconnected")
    by_channel: dict[int, list[str]] = {}
    for sock, channel in joined.items():
        name = sock.decode() if isinstance(sock, bytes) else str(sock)
        by_channel.setdefault(int(channel), []).append(name)
    for channel_id, names in by_channel.items():
        k = keys.sockets_key(channel_id)
        async with r.pipeline(transaction=True) as p:
            p.hmget(k, names)
            p.hdel(k, *names)
            p.hvals(k)
            dead, _, alive = await p.execute()
        remaining = {json.loads(v)["user_id"] for v in alive}
        gone = {json.loads(v)["user_id"] for v in dead if v is not None} - remaining
        for user_id in sorted(gone):
            await send_now(keys.channel_group(channel_id), events.MemberLeft(user_id=user_id))
    # Locations its sockets shared go as their disconnects would have taken them.
    located = await r.hvals(keys.process_located_key(process_id))
    for user_id in sorted({int(v) for v in located}):
        await location_clear(user_id=user_id)
    await r.delete(
        keys.process_floors_key(process_id),
        keys.process_sockets_key(process_id),
        keys.process_located_key(process_id),
    )


def location_round(value: float) -> float:
    """0.01° is about 1 km: coarse enough that no one's doorstep is ever stored."""
    return round(value, 2)


# Each move of a location is a probe of who is in range (floor.taken's in_range, the audio):
# a socket may move its user's location once a minute. A refresh within LOCATION_REFRESH_KM
# of the stored place (GPS drift, the 0.01° rounding) always passes, and keeps the stored
# place: many small steps cannot walk it anywhere.
LOCATION_MOVES_PER_MINUTE = 1
LOCATION_REFRESH_KM = 2.0
_EARTH_RADIUS_KM = 6372.797560856  # Redis GEO's own


def _distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance of two (lon, lat) points, as Redis GEODIST measures it."""
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2
    h += math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(math.sqrt(h))


# The GEO set is shared by everyone, so it cannot expire per member: each member's deadline
# (their marker's expiry) is kept beside it, and what is past goes from both, with its marker.
# KEYS: the GEO set, the deadlines; ARGV: now, the location keys' prefix. Returns who went.
_LOCATIONS_EXPIRE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, uid in ipairs(gone) do
  redis.call('ZREM', KEYS[1], uid)
  redis.call('ZREM', KEYS[2], uid)
  redis.call('DEL', ARGV[2] .. uid)
end
return gone
"""


def _expire_args(now: float) -> list[Any]:
    return [2, keys.geo_key(), keys.geo_deadlines_key(), now, _LOCATION_PREFIX]


def locations_expire() -> int:
    """Remove the coordinates of everyone whose location was not refreshed in time (the beat
    runs it, so it happens when nobody sets a location too). Their channels see their
    country go. Returns how many went; running it again removes nothing."""
    gone = get_redis().eval(_LOCATIONS_EXPIRE, *_expire_args(time.time()))  # type: ignore[no-untyped-call]
    for uid in gone:
        send_on_commit(keys.voice_user_group(int(uid)), events.LocationChanged())
    return len(gone)


async def _locations_expire_async(now: float) -> None:
    gone = await get_async_redis().eval(_LOCATIONS_EXPIRE, *_expire_args(now))  # type: ignore[misc]
    for uid in gone:
        await send_now(keys.voice_user_group(int(uid)), events.LocationChanged())


async def location_set(
    *, user_id: int, lat: float, lon: float, socket: str = "", process_id: str = ""
) -> None:
    """Keep the user's coarse position in Redis GEO while they refresh it, never in SQL; the
    coordinates of everyone who stopped refreshing go first. A move (not a refresh of the
    same place) beyond LOCATION_MOVES_PER_MINUTE is refused and the stored place kept. The
    user's sockets in channels re-announce themselves when the location starts being shared
    (their country shows). `socket` of `process_id`: cleared if that process dies."""
    r = get_async_redis()
    now = time.time()
    await _locations_expire_async(now)
    place = (location_round(lon), location_round(lat))
    async with r.pipeline(transaction=False) as p:
        p.exists(keys.location_key(user_id))
        p.geopos(keys.geo_key(), str(user_id))
        located, (stored,) = await p.execute()
    refresh = (
        bool(located) and stored is not None and _distance_km(stored, place) <= LOCATION_REFRESH_KM
    )
    if not refresh and not await allow_async(
        keys.location_moves_key(user_id),
        capacity=LOCATION_MOVES_PER_MINUTE,
        per_second=LOCATION_MOVES_PER_MINUTE / 60,
    ):
        raise ServiceError(
            "location_too_frequent",
            "your location can change once a minute; try again shortly",
            status=429,
        )
    ttl = settings.VOICE_LOCATION_TTL_SECONDS
    async with r.pipeline(transaction=True) as p:
        if not refresh:
            p.geoadd(keys.geo_key(), [*place, str(user_id)])
        p.zadd(keys.geo_deadlines_key(), {str(user_id): now + ttl})
        p.set(keys.location_key(user_id), "1", ex=ttl)
        # If every process dies, the whole set still goes once no one refreshes it.
        p.expire(keys.geo_key(), ttl)
        p.expire(keys.geo_deadlines_key(), ttl)
        if process_id:
            p.hset(keys.process_located_key(process_id), socket, user_id)
            p.expire(keys.process_located_key(process_id), settings.LIVENESS_SOCKETS_KEEP_SECONDS)
        await p.execute()
    if not located:
        await send_now(keys.voice_user_group(user_id), events.LocationChanged())


async def location_clear(*, user_id: int, socket: str = "", process_id: str = "") -> None:
    """Forget the user's position; their sockets in channels stop showing their country."""
    r = get_async_redis()
    async with r.pipeline(transaction=True) as p:
        p.zrem(keys.geo_key(), str(user_id))
        p.zrem(keys.geo_deadlines_key(), str(user_id))
        p.delete(keys.location_key(user_id))
        if process_id:
            p.hdel(keys.process_located_key(process_id), socket)
        removed, _, marked, *_ = await p.execute()
    if removed or marked:
        await send_now(keys.voice_user_group(user_id), events.LocationChanged())
