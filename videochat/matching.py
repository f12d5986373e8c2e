"""The live video chat session of one socket: queue, next, pairing, relaying to the partner,
reports and bans reaching an open socket. Async services that decide; the consumer speaks.

Each service takes the socket's `Seat` (its in-memory state: what `hello` said, the current
match, whether it waits in the queue), changes it, emits events to other sockets through
realtime.events (the partner may be on another process), and returns an `Outcome`: the
frames the consumer sends to its own socket, in order, and whether it closes. The queue and
the pairing themselves are matchmaking's (Redis, atomic, shared by every process). Nothing a
client says about ids is trusted: every signal and chat line is checked against the pairing
matchmaking holds for this user. Protocol: docs/protocols/videochat.md.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from pydantic import BaseModel

from accounts.models import User
from accounts.selectors import profile_of
from realtime import closecodes, metrics, turn
from realtime.batching import Batcher, PerLoop
from realtime.dbpool import pooled
from realtime.errors import ServiceError
from realtime.events import send_to
from realtime.schemas import ErrorFrame

from . import events, geo, live, selectors, services, translation
from . import matchmaking as mm
from .models import Report
from .schemas import (
    Chat,
    ChatOut,
    ClientInfo,
    CountryCard,
    Hello,
    IceServer,
    MatchEnded,
    MatchFound,
    PartnerCard,
    QueueLeft,
    QueueWaiting,
    Ready,
    Signal,
    SignalOut,
)

log = logging.getLogger(__name__)

# A newer socket of the same user took over (not a reason to reconnect).
CLOSE_REPLACED = 4409


@dataclass
class Session:
    """What `hello` said, for this socket only: client data is read, never stored."""

    client: ClientInfo
    gender: str
    want_gender: str | None
    want_country: str | None
    language: str
    translate_to: str


@dataclass(frozen=True)
class CurrentMatch:
    match_id: str
    partner_id: int
    partner_channel: str


@dataclass
class Seat:
    """One video chat socket's live state, kept by its consumer in memory."""

    user_id: int
    channel_name: str
    country: str  # from the IP, looked up at connect; the IP itself is forgotten
    defaults: dict[str, str]  # the profile's name, gender, language, translation target
    session: Session | None = None
    match: CurrentMatch | None = None
    waiting: bool = False
    queued_at: float = 0.0  # monotonic time of joining the queue (time-to-match metric)
    claimed: bool = False  # this socket holds the user's video chat place (queue, match)
    filters_allowed: bool = False
    card: str = ""  # what a partner is shown (JSON), made at hello; waits with the queue entry
    # Wall-clock times: until when `filters_allowed` surely stands (the paid time's end; 0
    # once payments announced a change), and from when it is read again beside a queue entry.
    filters_known_until: float = 0.0
    filters_recheck_at: float = 0.0
    filters_reads: int = 0  # bumped by each announcement: a read begun before it is stale
    filters_refresh: asyncio.Task[None] | None = None
    seeker: mm.Seeker | None = None  # what queue entries send, kept from the last one
    # Recent pairs known to be over: ended by a step of this seat, or announced ended by the
    # partner before its "matched" came. A "matched" for one of them is stale.
    over: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=8))


@dataclass
class Outcome:
    """What the consumer sends to its own socket, in order; then closes if `close_code`."""

    frames: list[BaseModel] = field(default_factory=list)
    close_code: int | None = None

    def error(self, code: str, detail: str) -> None:
        self.frames.append(ErrorFrame(code=code, detail=detail))


def _profile_defaults(user: User) -> dict[str, str]:
    profile = profile_of(user)
    return {
        "name": profile.nickname,
        "gender": profile.gender,
        "language": profile.language,
        "translate_to": profile.translation_target,
    }


# --- the socket's life
async def seat_open(*, user: User, channel_name: str, client_ip: str | None) -> Seat:
    """Admit the socket (age, bans) and make it the user's video chat socket. An older socket
    of the user gives up its queue place and match first, then is told to close. The caller
    has joined the user's video chat group already, so a ban from now on reaches it."""
    await database_sync_to_async(services.access_require)(user=user)
    seat = Seat(
        user_id=user.pk,
        channel_name=channel_name,
        country=geo.country_of_ip(client_ip),
        defaults=await database_sync_to_async(_profile_defaults)(user),
    )
    replaced = await live.socket_claim(seat.user_id, channel_name)
    seat.claimed = True
    if replaced:
        await _leave_all(seat, reason="disconnected")
        await send_to(replaced, events.Replaced())
    return seat


async def seat_close(seat: Seat) -> None:
    """The socket closed: its place and match go, unless a newer socket took them over."""
    if seat.claimed and await live.socket_release(seat.user_id, seat.channel_name):
        await _leave_all(seat, reason="disconnected")


async def seat_heartbeat(seat: Seat) -> None:
    """Renew the queue entry's or the pair's deadline while the socket lives."""
    if seat.claimed and (seat.waiting or seat.match is not None):
        await mm.heartbeat(seat.user_id)


# --- client messages
async def hello(seat: Seat, msg: Hello) -> Outcome:
    await _filters_read(seat)
    if (msg.want_gender or msg.want_country) and not seat.filters_allowed:
        raise ServiceError("filters_not_allowed", "gender and country filters are paid")
    # Fields the client left out fall back to the profile; "" said explicitly is kept.
    sent = msg.model_fields_set
    seat.session = Session(
        client=msg.client,
        gender=msg.gender if "gender" in sent else seat.defaults["gender"],
        want_gender=msg.want_gender,
        want_country=msg.want_country,
        language=(msg.language if "language" in sent else "")
        or seat.defaults["language"]
        or translation.base_language(msg.client.language)[:3],
        translate_to=msg.translate_to if "translate_to" in sent else seat.defaults["translate_to"],
    )
    seat.card = json.dumps(_card_of(seat), separators=(",", ":"))
    seat.seeker = None
    me = geo.country_info(seat.country)
    servers = [IceServer(**s) for s in turn.ice_servers(user_id=seat.user_id)]  # type: ignore[arg-type]
    ready = Ready(
        me=CountryCard(country=me.code, country_name=me.name, flag=me.flag),
        filters_allowed=seat.filters_allowed,
        ice_servers=servers,
    )
    return Outcome([ready])


async def queue_join(seat: Seat) -> Outcome:
    _require_hello(seat)
    if seat.match is not None:
        raise ServiceError("in_match", "say next to meet someone else")
    out = Outcome()
    if seat.waiting:  # already queued: keep the place in line
        seeker = await _seeker(seat, out)
        out.frames.append(QueueWaiting(expected_wait_s=await mm.expected_wait(seeker)))
    else:
        await _enqueue(seat, out)
    return out


async def queue_leave(seat: Seat) -> Outcome:
    await _leave_all(seat, reason="left")
    return Outcome([QueueLeft()])


async def next_partner(seat: Seat, match_id: str | None = None) -> Outcome:
    """End the match (a skip: these two are not paired again soon) and queue again.
    `match_id`, when the client names it, must be the current match: the user cannot have
    meant one it has not seen yet."""
    _require_hello(seat)
    if match_id is not None and (seat.match is None or seat.match.match_id != match_id):
        raise ServiceError("not_in_match", "that match is already over")
    seat.match = None
    out = Outcome()
    # One step ends the match and queues the one who pressed Next; the partner is told (and
    # re-queued) after it: whoever is already waiting meets the person who moved on.
    await _enqueue(seat, out, skip=True)
    return out


async def signal_relay(seat: Seat, msg: Signal) -> None:
    """An SDP or ICE candidate, to the partner of this match only."""
    limit = settings.VIDEOCHAT_MAX_SDP_BYTES
    if msg.sdp_bytes() > limit:
        raise ServiceError("sdp_too_large", f"an SDP may be at most {limit} bytes")
    partner_channel = await _partner_channel(seat, msg.match_id)
    data = msg.data.model_dump(exclude_none=True)
    await send_to(
        partner_channel,
        events.Signal(match_id=msg.match_id, from_id=seat.user_id, kind=msg.kind, data=data),
    )


async def chat_send(seat: Seat, msg: Chat) -> Outcome:
    partner_channel = await _partner_channel(seat, msg.match_id)
    lang = seat.session.language if seat.session is not None else ""
    # Relayed, never stored: the line exists only in the two sockets' frames.
    await send_to(
        partner_channel,
        events.Chat(match_id=msg.match_id, from_id=seat.user_id, text=msg.text, lang=lang),
    )
    translated = await _translate(seat, msg.text, lang)
    line = ChatOut(
        match_id=msg.match_id, sender="me", text=msg.text, lang=lang, translation=translated
    )
    return Outcome([line])


# --- events from the partner's socket (any process) or from staff
async def partner_matched(seat: Seat, event: events.Matched) -> Outcome:
    """The partner paired us while we waited: we answer its offer.

    Trusted without asking Redis whether the pair still stands (a round trip per match, and
    the answer side's match.found after it). Only a step of this seat or of the partner
    ends the pair: this seat's steps report the pair they end (`Seat.over`), and they run one
    at a time with this handler, so none is in flight now; the partner tells us after its
    "matched", on the same way (in memory or its process's one PUBLISH pipeline), and an
    "ended" that overtook it anyway is kept in `Seat.over`. A socket that gave up its place
    (banned, replaced) takes no match: whoever did that ended the pair."""
    if event.match_id in seat.over or not seat.claimed:
        return Outcome()  # a pairing that has already ended
    if not seat.waiting or seat.session is None:
        # We left the queue while the partner was pairing us: undo it on both sides.
        ended = await mm.end_match(seat.user_id, skip=False)
        if ended is not None:
            await _tell_ended(seat, ended, reason="left")
        return Outcome()
    seat.waiting = False
    metrics.videochat_matched(seat.queued_at, pairs=0)
    seat.match = CurrentMatch(event.match_id, event.from_id, event.from_channel)
    partner = _partner_card(event.card)
    return Outcome([MatchFound(match_id=event.match_id, role="answer", partner=partner)])


async def partner_ended(seat: Seat, event: events.Ended) -> Outcome:
    """The partner ended the match; the one left behind goes straight back to the queue."""
    if not _from_partner(seat, event):
        seat.over.append(event.match_id)  # its "matched" may still be on the way
        return Outcome()
    seat.match = None
    out = Outcome([MatchEnded(match_id=event.match_id, reason=event.reason)])  # type: ignore[arg-type]
    await _enqueue(seat, out)
    return out


def partner_signal(seat: Seat, event: events.Signal) -> Outcome:
    if not _from_partner(seat, event):
        return Outcome()
    return Outcome([SignalOut(match_id=event.match_id, kind=event.kind, data=event.data)])  # type: ignore[arg-type]


async def partner_chat(seat: Seat, event: events.Chat) -> Outcome:
    if not _from_partner(seat, event):
        return Outcome()
    translated = await _translate(seat, event.text, event.lang)
    line = ChatOut(
        match_id=event.match_id,
        sender="partner",
        text=event.text,
        lang=event.lang,
        translation=translated,
    )
    return Outcome([line])


async def ban_reached(seat: Seat) -> Outcome:
    """Staff banned the user: give up the queue place and the match now, not when the
    client acknowledges the close, so a banned user is never matched in between."""
    if seat.claimed:
        seat.claimed = False
        await live.socket_release(seat.user_id, seat.channel_name)
        await _leave_all(seat, reason="disconnected")
    out = Outcome(close_code=closecodes.FORBIDDEN)
    out.error("banned", "you are banned from video chat")
    return out


async def seat_replaced(seat: Seat) -> Outcome:
    """The newer socket already took over the queue place and ended our match."""
    seat.claimed = False
    out = Outcome(close_code=CLOSE_REPLACED)
    out.error("replaced", "video chat was opened in another window")
    return out


async def process_dead_release(process_id: str, sockets: Mapping[str, Any]) -> None:
    """realtime.liveness hook: a process died with video chat sockets. Each one that was
    still its user's current socket gives up the queue place and the pairing, and the partner
    (on a live process) is told the match ended, as if the socket had closed."""
    for channel_name, sock in sockets.items():
        user_id = int(sock.user_id)
        if await live.socket_owner(user_id) != channel_name:
            continue  # not video chat, or a newer socket took over
        await live.socket_release(user_id, channel_name)
        seat = Seat(user_id, channel_name, country="", defaults={})
        await _leave_all(seat, reason="disconnected")


# --- moderation
async def report_partner(
    *, reporter: User, reason: str, chat_lines: Any, frame: UploadedFile | None
) -> Report:
    """File a report about the current partner, else the last one: matchmaking knows who
    that is, the client never says."""
    current = await mm.partner_of(reporter.pk)
    reported_id = current[1] if current is not None else await mm.last_partner(reporter.pk)
    if reported_id is None:
        raise ServiceError("no_partner", "there is nobody to report", status=409)
    return await database_sync_to_async(services.report_create)(
        reporter=reporter,
        reported_id=reported_id,
        reason=reason,
        chat_lines=chat_lines,
        frame=frame,
    )


# --- helpers
def _require_hello(seat: Seat) -> None:
    if not seat.claimed:  # banned or replaced: a join still on its way must not queue again
        raise ServiceError("closed", "this socket gave up its place in video chat")
    if seat.session is None:
        raise ServiceError("hello_required", "send hello first")


def _card_of(seat: Seat) -> dict[str, str]:
    assert seat.session is not None
    return {
        "country": seat.country,
        "gender": seat.session.gender,
        "language": seat.session.language,
        "name": seat.defaults["name"],
    }


def _from_partner(seat: Seat, event: events.PartnerEvent) -> bool:
    return (
        seat.match is not None
        and event.match_id == seat.match.match_id
        and event.from_id == seat.match.partner_id
    )


async def _partner_channel(seat: Seat, match_id: str) -> str:
    """The partner's channel, if `match_id` is this user's match right now."""
    refused = ServiceError("not_in_match", "that match is not yours or is over")
    if seat.match is None or seat.match.match_id != match_id:
        raise refused
    current = await mm.partner_of(seat.user_id)
    if current is None or current[0] != match_id or current[1] != seat.match.partner_id:
        raise refused
    return current[2]


def wall_clock() -> float:
    """The time the paid filters are checked against (one place, so tests can move it)."""
    return time.time()


async def _filters(seat: Seat, out: Outcome) -> tuple[str | None, str | None]:
    assert seat.session is not None
    s = seat.session
    if not (s.want_gender or s.want_country):
        return None, None
    # A subscription may lapse mid-session. When it may have changed (the paid time ended,
    # payments announced a change) the entry waits for a fresh read. When only a while passed
    # (a staff edit announces nothing), the entry goes on with what is known and the read runs
    # beside it, for the next entry: a read on the way in made every arrival of a filtering
    # user wait its turn on the database once a minute (benchmarks/matchmaking.py).
    now = wall_clock()
    if now >= seat.filters_known_until:
        await _filters_read(seat)
    elif now >= seat.filters_recheck_at and seat.filters_refresh is None:
        seat.filters_refresh = asyncio.create_task(_filters_recheck(seat))
    if not seat.filters_allowed:
        s.want_gender = s.want_country = None
        seat.filters_allowed = False
        out.error("filters_not_allowed", "filters dropped: not entitled")
        return None, None
    return s.want_gender, s.want_country


class _FilterReads(Batcher[int]):
    """The paid-filters reads of one event loop, one query a batch: the users asked for
    while a read is on its way are read together in the next. Read one by one, the re-reads
    of sockets opened together (a deploy's reconnects, benchmarks/matchmaking.py) all fell
    due together a minute later: a quarter of a server's CPU in a 500 arrivals/s step went
    to building, running and handing over one query per user (profiled)."""

    async def send_batch(self, user_ids: list[int]) -> list[Any]:
        # Read-only: on the pool's threads, not behind the process's one database thread.
        answers = await pooled(selectors.filters_allowed_until_many)(user_ids=set(user_ids))
        return [answers[user_id] for user_id in user_ids]


_filter_reads = PerLoop(_FilterReads)


async def _filters_allowed_until(user_id: int) -> tuple[bool, dt.datetime | None]:
    allowed, until = await _filter_reads.get().call(user_id)
    return allowed, until


async def _filters_read(seat: Seat) -> None:
    while True:
        reads = seat.filters_reads
        allowed, until = await _filters_allowed_until(seat.user_id)
        if reads == seat.filters_reads:
            break  # else payments announced a change meanwhile: this answer may predate it
    seat.filters_allowed = allowed
    seat.filters_known_until = math.inf if until is None else until.timestamp()
    seat.filters_recheck_at = wall_clock() + settings.VIDEOCHAT_FILTERS_RECHECK_SECONDS


async def _filters_recheck(seat: Seat) -> None:
    try:
        await _filters_read(seat)
    except Exception:
        log.exception("re-reading the paid filters of user %s failed", seat.user_id)
    finally:
        seat.filters_refresh = None


def entitlements_changed(seat: Seat) -> None:
    """Payments announced a purchase, refund or expiry: the next queue entry reads it."""
    seat.filters_reads += 1
    seat.filters_known_until = 0.0


async def _seeker(seat: Seat, out: Outcome) -> mm.Seeker:
    assert seat.session is not None
    want_gender, want_country = await _filters(seat, out)
    seeker = seat.seeker
    # Made (and validated) once per hello and filters, not per entry.
    if seeker is None or (seeker.want_gender, seeker.want_country) != (want_gender, want_country):
        seeker = seat.seeker = mm.Seeker(
            seat.user_id,
            seat.channel_name,
            seat.session.gender,
            seat.country,
            want_gender,
            want_country,
        )
    return seeker


async def _enqueue(seat: Seat, out: Outcome, *, skip: bool = False) -> None:
    """Into the queue: matched at once (the partner is told, we offer) or waiting. The same
    step ends a pair we may still be in (a skip for "next"; a "matched" event still on the
    way to us is such a pair), and that ex-partner is told after it."""
    assert seat.session is not None
    seeker = await _seeker(seat, out)
    if not seat.waiting:
        seat.queued_at = time.monotonic()
    entry = await mm.enter(seeker, skip=skip, card=seat.card)
    try:
        await _entered(seat, entry, out)
    finally:
        if entry.ended is not None:
            await _tell_ended(seat, entry.ended, reason="next" if skip else "left")


async def _entered(seat: Seat, entry: mm.Entry, out: Outcome) -> None:
    found = entry.match
    if found is None:
        seat.waiting = True
        out.frames.append(QueueWaiting(expected_wait_s=entry.expected_wait))
        return
    seat.waiting = False
    metrics.videochat_matched(seat.queued_at, pairs=1)
    seat.match = CurrentMatch(found.match_id, found.partner_id, found.partner_channel_name)
    card = json.loads(entry.partner_card) if entry.partner_card else {}
    # Matchmaking's view of the partner's gender and country is the one it matched on.
    card.update(gender=found.partner_gender or "", country=found.partner_country or "")
    # The partner first, so its answer side knows the match before our offer arrives.
    await send_to(
        found.partner_channel_name,
        events.Matched(
            match_id=found.match_id,
            from_id=seat.user_id,
            from_channel=seat.channel_name,
            card=_card_of(seat),
        ),
    )
    out.frames.append(
        MatchFound(match_id=found.match_id, role="offer", partner=_partner_card(card))
    )


async def _leave_all(seat: Seat, *, reason: str) -> None:
    """Out of the queue and out of any match; the partner is told and re-queued."""
    seat.waiting = False
    seat.match = None
    ended = await mm.leave(seat.user_id)
    if ended is not None:
        await _tell_ended(seat, ended, reason=reason)


async def _tell_ended(seat: Seat, ended: tuple[str, int, str], *, reason: str) -> None:
    match_id, _partner_id, partner_channel = ended
    seat.over.append(match_id)  # its "matched" may still be on the way to us
    await send_to(
        partner_channel, events.Ended(match_id=match_id, from_id=seat.user_id, reason=reason)
    )


async def _translate(seat: Seat, text: str, source: str) -> str | None:
    target = seat.session.translate_to if seat.session else ""
    if not target:
        return None
    # A blocking HTTP call with its own timeout: run it off the event loop.
    return await sync_to_async(translation.translate, thread_sensitive=False)(
        text, source=source, target=target
    )


def _partner_card(card: dict[str, str]) -> PartnerCard:
    country = geo.country_info(card.get("country"))
    return PartnerCard(
        country=country.code,
        country_name=country.name,
        flag=country.flag,
        gender=card.get("gender", ""),
        language=card.get("language", ""),
        name=card.get("name", ""),
    )
