"""Random 1:1 matchmaking with gender and country filters, kept in Redis only.

Every operation is one step of `videochat/lua/matchmaking.lua`, atomic on the Redis server,
so two ASGI processes can never hand the same waiting user to two seekers. The script's
header explains the index (one lexicographic sorted set answering "who is compatible with me"
in at most four range lookups) and why it declares all six keys it uses.

Privacy: the policy promises "no record of who communicated with whom". The current pair and
the last partner (kept `VIDEOCHAT_LAST_PARTNER_TTL_SECONDS`, only so a report can name whom
it is about) exist in Redis alone, under deadlines; nothing here writes to the SQL database.

Liveness: a waiting entry or a pair carries a deadline (`VIDEOCHAT_WAIT_TTL_SECONDS`,
`VIDEOCHAT_PAIR_TTL_SECONDS`). A live socket calls `heartbeat()` (or enqueues again) well
within it; if its process dies, the deadline passes and the entry is swept by the next steps
and never offered as a partner. We chose deadlines checked inside the step over a separate
sweeper process because correctness then needs no extra moving part: an expired waiting user
is skipped even if nothing has swept it yet. Forgetting on time is another matter: a quiet
queue runs no steps, so a beat task (videochat.tasks.matchmaking_sweep) sweeps every minute
and a last partner or a skip does not outlive its deadline by more than that.

Re-enqueueing: a user already waiting keeps their arrival time (their place in line) under
the new filters; a user still paired has that pair dissolved first, in the same step, and
`enter()` reports it so the consumer tells the ex-partner.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import secrets
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.exceptions import NoScriptError

from realtime.batching import Batcher
from realtime.redis import get_async_redis, get_redis

from .keys import MATCHMAKING_PARTS, matchmaking_key

LUA_SOURCE = (Path(__file__).resolve().parent / "lua" / "matchmaking.lua").read_text()

_GENDERS = {"f", "m", "x", ""}
_WANTED_GENDERS = {"f", "m", None}
_COUNTRY = re.compile(r"^[A-Z]{2}$")
# A Channels channel name; '|' (our field separator) can never occur in one.
_CHANNEL = re.compile(r"^[A-Za-z0-9\-_.!]{1,200}$")


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


@dataclass(frozen=True)
class Seeker:
    user_id: int
    channel_name: str  # the socket to notify (Channels channel name)
    gender: str  # "f" | "m" | "x" | "" (unknown)
    country: str  # ISO-2 or "" (unknown)
    want_gender: str | None  # "f" | "m" | None = any
    want_country: str | None  # ISO-2 | None = any

    def __post_init__(self) -> None:
        # Validated here because the values become parts of Redis members and bucket names.
        if self.gender not in _GENDERS:
            raise ValueError(f"gender must be one of f, m, x or empty, not {self.gender!r}")
        if self.country and not _COUNTRY.match(self.country):
            raise ValueError(f"country must be ISO-2 upper case or empty, not {self.country!r}")
        if self.want_gender not in _WANTED_GENDERS:
            raise ValueError(f"want_gender must be f, m or None, not {self.want_gender!r}")
        if self.want_country is not None and not _COUNTRY.match(self.want_country):
            raise ValueError(
                f"want_country must be ISO-2 upper case or None, not {self.want_country!r}"
            )
        if not _CHANNEL.match(self.channel_name):
            raise ValueError(f"not a channel name: {self.channel_name!r}")

    @functools.cached_property
    def tokens(self) -> tuple[str, str, str, str]:
        """(gender, country, wanted gender, wanted country) as the script spells them."""
        return (
            self.gender or "?",
            self.country or "?",
            self.want_gender or "*",
            self.want_country or "*",
        )

    @functools.cached_property
    def filter_class(self) -> str:
        """Whom the time-to-match average is kept for: own gender and the two filters."""
        g, _c, wg, wc = self.tokens
        return f"{g}/{wg}/{wc}"


@dataclass(frozen=True)
class Match:
    match_id: str  # random, unguessable
    partner_id: int
    partner_channel_name: str
    partner_gender: str  # "f" | "m" | "x" | ""
    partner_country: str  # ISO-2 or ""


@dataclass(frozen=True)
class Entry:
    """What one queue entry did, in one step: the pair it ended (to tell the ex-partner),
    the match it made, or the expected wait (seconds, None if no recent sample) if it waits."""

    ended: tuple[str, int, str] | None  # (match_id, ex-partner, ex-partner's channel)
    match: Match | None
    partner_card: str  # the partner's card as it gave it (JSON), "" if none or no match
    expected_wait: float | None


# --- Keys: six, one hash tag (videochat/keys.py), so the script runs on Redis Cluster.
_keys: tuple[str, tuple[str, ...]] = ("", ())


def state_keys() -> tuple[str, ...]:
    """idx, wait, pair, last, ttl, stats (see the script's header). Built once per prefix:
    every step passes them, and building them is a measurable part of a step's client CPU."""
    global _keys
    prefix = settings.REDIS_KEY_PREFIX
    if _keys[0] != prefix:
        _keys = (prefix, tuple(matchmaking_key(p) for p in MATCHMAKING_PARTS))
    return _keys[1]


# What a script argument may be (redis-py encodes each to bytes).
Arg = str | int | float


# --- The script: EVALSHA, loading the source on the first NOSCRIPT (a fresh or restarted
# server), so the 8 KB source is not sent with every step.
_SHA = hashlib.sha1(LUA_SOURCE.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


def _run_sync(client: redis.Redis, *args: Arg) -> Any:
    try:
        return client.evalsha(_SHA, 6, *state_keys(), *args)
    except NoScriptError:
        client.script_load(LUA_SOURCE)
        return client.evalsha(_SHA, 6, *state_keys(), *args)


async def _run(client: aioredis.Redis, *args: Arg) -> Any:
    """One step, sent with whatever other steps this event loop asks for meanwhile."""
    loop = asyncio.get_running_loop()
    steps = _steps.get(loop)
    if steps is None or steps.client is not client:
        steps = _steps[loop] = _Steps(client)
    return await steps.run(args)


class _Steps(Batcher[tuple[Arg, ...]]):
    """The steps of one event loop, written to Redis in batches: the steps asked for while
    a batch is on its way go together in the next one, one pipeline on one connection.

    One request per step had each concurrent step take a pooled connection of its own: an
    ASGI process that fell behind opened a connection per step in its backlog (about 4,000
    in 5 s for two processes at 1,000 arrivals/s, benchmarks/matchmaking.py), each with its
    connect and health check, so falling behind made every step dearer. Batched, a backlog
    makes the batches bigger and each step cheaper (one write and one read per batch).
    Each step is still its own atomic script run, in the order asked."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__()
        self.client = client

    async def run(self, args: tuple[Arg, ...]) -> Any:
        return await self.call(args)

    async def send_batch(self, batch: list[tuple[Arg, ...]]) -> list[Any]:
        keys = state_keys()
        pipe = self.client.pipeline(transaction=False)
        for args in batch:
            pipe.evalsha(_SHA, 6, *keys, *args)
        replies = list(await pipe.execute(raise_on_error=False))
        again = [i for i, value in enumerate(replies) if isinstance(value, NoScriptError)]
        if again:  # a fresh or restarted server: those steps did not run
            await self.client.script_load(LUA_SOURCE)
            pipe = self.client.pipeline(transaction=False)
            for i in again:
                pipe.evalsha(_SHA, 6, *keys, *batch[i])
            for i, value in zip(again, await pipe.execute(raise_on_error=False), strict=True):
                replies[i] = value
        return replies


_steps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Steps] = weakref.WeakKeyDictionary()


# --- Arguments and replies, shared by the async functions and their sync twins.
@dataclass(frozen=True)
class _Limits:
    """The settings a step passes, in the script's units: read once, not per step (the
    settings object's lookups were 3 % of a server's samples at 1,000 arrivals/s,
    benchmarks/matchmaking.py). A changed setting (tests) is read again."""

    wait_ttl: int
    pair_ttl: int
    last_ttl: int
    skip_ttl: int
    estimate_max_age: int
    enqueue: tuple[Arg, ...]  # wait, pair and last-partner deadlines, scan bound, EWMA alpha

    @classmethod
    def read(cls) -> _Limits:
        wait_ttl = _ms(settings.VIDEOCHAT_WAIT_TTL_SECONDS)
        pair_ttl = _ms(settings.VIDEOCHAT_PAIR_TTL_SECONDS)
        last_ttl = _ms(settings.VIDEOCHAT_LAST_PARTNER_TTL_SECONDS)
        return cls(
            wait_ttl=wait_ttl,
            pair_ttl=pair_ttl,
            last_ttl=last_ttl,
            skip_ttl=_ms(settings.VIDEOCHAT_SKIP_TTL_SECONDS),
            estimate_max_age=_ms(settings.VIDEOCHAT_WAIT_ESTIMATE_MAX_AGE_SECONDS),
            enqueue=(
                wait_ttl,
                pair_ttl,
                last_ttl,
                int(settings.VIDEOCHAT_MATCH_MAX_SCAN),
                settings.VIDEOCHAT_WAIT_EWMA_ALPHA,
            ),
        )


_limits_read: _Limits | None = None


def _limits() -> _Limits:
    global _limits_read
    if _limits_read is None:
        _limits_read = _Limits.read()
    return _limits_read


@receiver(setting_changed)
def _settings_changed(**kwargs: Any) -> None:
    global _limits_read
    _limits_read = None


def _enqueue_args(seeker: Seeker, skip: bool, card: str) -> tuple[Arg, ...]:
    limits = _limits()
    return (
        "enqueue",
        seeker.user_id,
        seeker.channel_name,
        *seeker.tokens,
        secrets.token_urlsafe(18),  # the match id if this step pairs; unguessable
        *limits.enqueue,
        "1" if skip else "0",
        limits.skip_ttl,
        card,
        seeker.filter_class,
        limits.estimate_max_age,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry(reply: list[bytes]) -> Entry:
    e_id, e_partner, e_channel, match_id, partner, channel, gender, country, card, wait = (
        _text(v) for v in reply
    )
    match = None
    if match_id:
        match = Match(
            match_id=match_id,
            partner_id=int(partner),
            partner_channel_name=channel,
            partner_gender="" if gender == "?" else gender,
            partner_country="" if country == "?" else country,
        )
    return Entry(
        ended=(e_id, int(e_partner), e_channel) if e_id else None,
        match=match,
        partner_card=card,
        expected_wait=int(wait) / 1000 if wait else None,
    )


def _pair(reply: list[bytes] | None) -> tuple[str, int, str] | None:
    if not reply:
        return None
    match_id, partner, channel = (_text(v) for v in reply)
    return match_id, int(partner), channel


def _end_args(user_id: int, skip: bool) -> tuple[Arg, ...]:
    limits = _limits()
    return ("end", user_id, "1" if skip else "0", limits.skip_ttl, limits.last_ttl)


def _heartbeat_args(user_id: int) -> tuple[Arg, ...]:
    limits = _limits()
    return ("heartbeat", user_id, limits.wait_ttl, limits.pair_ttl)


def _expected_args(seeker: Seeker) -> tuple[Arg, ...]:
    return ("expected", seeker.filter_class, _limits().estimate_max_age)


def _seconds(reply: bytes | None) -> float | None:
    return None if reply is None else int(reply) / 1000


# --- The interface (asyncio, for consumers).
async def enter(seeker: Seeker, *, skip: bool = False, card: str = "") -> Entry:
    """Pair `seeker` with the longest-waiting compatible user, or put them in the queue, in
    one step that first ends the seeker's current pair (skip=True for "next": the two are not
    paired again for VIDEOCHAT_SKIP_TTL_SECONDS) and reports it, so the caller tells the
    ex-partner.

    Compatible: each side's wanted gender/country matches the other's attributes, not the
    seeker themself, not skipped by either within VIDEOCHAT_SKIP_TTL_SECONDS, not already
    paired. On a match both directions of the pair are recorded and the partner leaves every
    index; the caller notifies the partner at `partner_channel_name`. `card` (what a partner
    is shown) waits with the entry and is handed to whoever pairs with it.
    """
    return _entry(await _run(get_async_redis(), *_enqueue_args(seeker, skip, card)))


async def enqueue(seeker: Seeker) -> Match | None:
    """`enter` without a card: the match, or None when now waiting."""
    return (await enter(seeker)).match


async def dequeue(user_id: int) -> None:
    """Leave the queue (tab closed, "stop"). Idempotent; a current pair is left alone."""
    await _run(get_async_redis(), "dequeue", user_id, _limits().last_ttl)


async def leave(user_id: int) -> tuple[str, int, str] | None:
    """Leave the queue and end the pair (no skip) in one step; returns the ex-partner to
    notify, as `end_match` does."""
    return _pair(await _run(get_async_redis(), "leave", user_id, _limits().last_ttl))


async def partner_of(user_id: int) -> tuple[str, int, str] | None:
    """(match_id, partner_id, partner_channel_name) of the user's current pair, or None."""
    return _pair(await _run(get_async_redis(), "partner", user_id))


async def end_match(user_id: int, *, skip: bool) -> tuple[str, int, str] | None:
    """Dissolve the user's pair in both directions; returns the ex-partner to notify.

    skip=True ("next"): the two are not paired again for VIDEOCHAT_SKIP_TTL_SECONDS.
    """
    return _pair(await _run(get_async_redis(), *_end_args(user_id, skip)))


async def last_partner(user_id: int) -> int | None:
    """The most recent ex-partner, for VIDEOCHAT_LAST_PARTNER_TTL_SECONDS, so a report filed
    after the chat ended can say whom it is about."""
    reply = await _run(get_async_redis(), "last", user_id)
    return None if reply is None else int(reply)


async def heartbeat(user_id: int) -> bool:
    """Extend the deadline of the user's waiting entry and/or pair; False if they have none."""
    return bool(await _run(get_async_redis(), *_heartbeat_args(user_id)))


async def expected_wait(seeker: Seeker) -> float | None:
    """Seconds a user with these attributes and filters has recently waited for a partner
    (a moving average of matched waits), or None when there is no recent sample."""
    return _seconds(await _run(get_async_redis(), *_expected_args(seeker)))


async def sweep(limit: int = 1000) -> int:
    """Forget up to `limit` expired entries now (steps also do this a few at a time)."""
    last_ttl = _ms(settings.VIDEOCHAT_LAST_PARTNER_TTL_SECONDS)
    return int(await _run(get_async_redis(), "sweep", limit, last_ttl))


# --- Sync twins (Celery tasks, management commands, scripts).
def enter_sync(seeker: Seeker, *, skip: bool = False, card: str = "") -> Entry:
    return _entry(_run_sync(get_redis(), *_enqueue_args(seeker, skip, card)))


def enqueue_sync(seeker: Seeker) -> Match | None:
    return enter_sync(seeker).match


def dequeue_sync(user_id: int) -> None:
    _run_sync(get_redis(), "dequeue", user_id, _ms(settings.VIDEOCHAT_LAST_PARTNER_TTL_SECONDS))


def partner_of_sync(user_id: int) -> tuple[str, int, str] | None:
    return _pair(_run_sync(get_redis(), "partner", user_id))


def end_match_sync(user_id: int, *, skip: bool) -> tuple[str, int, str] | None:
    return _pair(_run_sync(get_redis(), *_end_args(user_id, skip)))


def last_partner_sync(user_id: int) -> int | None:
    reply = _run_sync(get_redis(), "last", user_id)
    return None if reply is None else int(reply)


def heartbeat_sync(user_id: int) -> bool:
    return bool(_run_sync(get_redis(), *_heartbeat_args(user_id)))


def expected_wait_sync(seeker: Seeker) -> float | None:
    return _seconds(_run_sync(get_redis(), *_expected_args(seeker)))


def sweep_sync(limit: int = 1000) -> int:
    last_ttl = _ms(settings.VIDEOCHAT_LAST_PARTNER_TTL_SECONDS)
    return int(_run_sync(get_redis(), "sweep", limit, last_ttl))
