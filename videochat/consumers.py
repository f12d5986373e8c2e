"""/ws/videochat/: matchmaking, WebRTC signalling and text chat between two strangers.

Thin by design: the queue and the pairing are matchmaking's (Redis, atomic, shared by every
process); this consumer keeps the session's settings in memory, asks matchmaking, and
relays frames to the partner's channel, which may be on another process. Nothing a client
says about ids is trusted: every signal and chat line is checked against the pairing
matchmaking holds for this user. Protocol: docs/protocols/videochat.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from accounts.selectors import profile_of
from realtime import metrics
from realtime.consumers import CLOSE_FORBIDDEN, BaseConsumer
from realtime.errors import ServiceError
from realtime.events import send_to

from . import conf, events, geo, live, selectors, services, translation, turn
from . import matchmaking as mm
from .keys import videochat_user_group
from .schemas import (
    Chat,
    ChatOut,
    ClientInfo,
    CountryCard,
    Hello,
    IceServer,
    MatchEnded,
    MatchFound,
    Next,
    PartnerCard,
    QueueJoin,
    QueueLeave,
    QueueLeft,
    QueueWaiting,
    Ready,
    Signal,
    SignalOut,
    VideochatInbound,
)

log = logging.getLogger(__name__)

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


def _profile_defaults(user: Any) -> dict[str, str]:
    profile = profile_of(user)
    return {
        "name": profile.nickname,
        "gender": profile.gender,
        "language": profile.language,
        "translate_to": profile.translation_target,
    }


class VideochatConsumer(BaseConsumer):
    inbound = VideochatInbound
    rate_scope = "videochat"

    session: Session | None = None
    match: CurrentMatch | None = None
    waiting = False
    _queued_at = 0.0  # monotonic time of joining the queue (time-to-match metric)
    claimed = False  # this socket holds the user's video chat place (queue, match)
    filters_allowed = False
    country = ""
    heartbeat_task: asyncio.Task[None] | None = None

    # --- lifecycle
    async def on_connect(self) -> None:
        assert self.user_id is not None
        await database_sync_to_async(services.access_require)(user=self.user)
        # The IP is looked up and forgotten; only the country stays, in memory.
        self.country = geo.country_of_ip(geo.scope_client_ip(self.scope))
        self.defaults = await database_sync_to_async(_profile_defaults)(self.user)
        await self.join(videochat_user_group(self.user_id))
        replaced = await live.socket_claim(self.user_id, self.channel_name)
        self.claimed = True
        if replaced:
            # The queue and the pairing are per user: the older tab's are given up first,
            # then it is told to close.
            await self._leave_all(reason="disconnected")
            await send_to(replaced, events.Replaced())
        self.heartbeat_task = asyncio.create_task(self._heartbeat())

    async def on_disconnect(self, code: int) -> None:
        assert self.user_id is not None
        if self.heartbeat_task is not None:
            self.heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.heartbeat_task
        if self.claimed and await live.socket_release(self.user_id, self.channel_name):
            await self._leave_all(reason="disconnected")
        await live.card_drop(self.channel_name)

    async def _heartbeat(self) -> None:
        assert self.user_id is not None
        while True:
            await asyncio.sleep(conf.get("VIDEOCHAT_HEARTBEAT_SECONDS"))
            try:
                if self.claimed and (self.waiting or self.match is not None):
                    await mm.heartbeat(self.user_id)
            except Exception:
                log.exception("videochat heartbeat failed for user %s", self.user_id)

    # --- client messages
    async def on_hello(self, msg: Hello) -> None:
        assert self.user_id is not None
        self.filters_allowed = await database_sync_to_async(selectors.filters_allowed)(
            user_id=self.user_id
        )
        if (msg.want_gender or msg.want_country) and not self.filters_allowed:
            raise ServiceError("filters_not_allowed", "gender and country filters are paid")
        # Fields the client left out fall back to the profile; "" said explicitly is kept.
        sent = msg.model_fields_set
        self.session = Session(
            client=msg.client,
            gender=msg.gender if "gender" in sent else self.defaults["gender"],
            want_gender=msg.want_gender,
            want_country=msg.want_country,
            language=(msg.language if "language" in sent else "")
            or self.defaults["language"]
            or translation.base_language(msg.client.language)[:3],
            translate_to=msg.translate_to
            if "translate_to" in sent
            else self.defaults["translate_to"],
        )
        await live.card_put(self.channel_name, self._my_card())
        me = geo.country_info(self.country)
        await self.send_model(
            Ready(
                me=CountryCard(country=me.code, country_name=me.name, flag=me.flag),
                filters_allowed=self.filters_allowed,
                ice_servers=[IceServer(**s) for s in turn.ice_servers(user_id=self.user_id)],  # type: ignore[arg-type]
            )
        )

    async def on_queue_join(self, msg: QueueJoin) -> None:
        self._require_hello()
        if self.match is not None:
            raise ServiceError("in_match", "say next to meet someone else")
        if self.waiting:  # already queued: keep the place in line
            await self._send_waiting(await self._seeker())
        else:
            await self._enqueue()

    async def on_queue_leave(self, msg: QueueLeave) -> None:
        await self._leave_all(reason="left")
        await self.send_model(QueueLeft())

    async def on_next(self, msg: Next) -> None:
        assert self.user_id is not None
        self._require_hello()
        self.match = None
        ended = await mm.end_match(self.user_id, skip=True)
        # The one who pressed Next queues first, then the partner is told (and re-queued):
        # whoever is already waiting meets the person who moved on, deterministically.
        try:
            await self._enqueue()
        finally:
            if ended is not None:
                await self._tell_ended(ended, reason="next")

    async def on_signal(self, msg: Signal) -> None:
        assert self.user_id is not None
        limit = conf.get("VIDEOCHAT_MAX_SDP_BYTES")
        if msg.sdp_bytes() > limit:
            raise ServiceError("sdp_too_large", f"an SDP may be at most {limit} bytes")
        partner_channel = await self._partner_channel(msg.match_id)
        data = msg.data.model_dump(exclude_none=True)
        await send_to(
            partner_channel,
            events.Signal(match_id=msg.match_id, from_id=self.user_id, kind=msg.kind, data=data),
        )

    async def on_chat(self, msg: Chat) -> None:
        assert self.user_id is not None
        partner_channel = await self._partner_channel(msg.match_id)
        lang = self.session.language if self.session is not None else ""
        # Relayed, never stored: the line exists only in the two sockets' frames.
        await send_to(
            partner_channel,
            events.Chat(match_id=msg.match_id, from_id=self.user_id, text=msg.text, lang=lang),
        )
        await self.send_model(
            ChatOut(
                match_id=msg.match_id,
                sender="me",
                text=msg.text,
                lang=lang,
                translation=await self._translate(msg.text, lang),
            )
        )

    # --- events from the partner's consumer (any process)
    async def videochat_matched(self, event: dict[str, Any]) -> None:
        assert self.user_id is not None
        current = await mm.partner_of(self.user_id)
        if current is None or current[0] != event["match_id"] or current[1] != event["from_id"]:
            return  # a pairing that has already ended
        if not self.waiting or self.session is None:
            # We left the queue while the partner was pairing us: undo it on both sides.
            ended = await mm.end_match(self.user_id, skip=False)
            if ended is not None:
                await self._tell_ended(ended, reason="left")
            return
        self.waiting = False
        metrics.videochat_matched(self._queued_at, pairs=0)
        self.match = CurrentMatch(event["match_id"], event["from_id"], event["from_channel"])
        partner = _partner_card(event["card"])
        found = MatchFound(match_id=event["match_id"], role="answer", partner=partner)
        await self.send_model(found)

    async def videochat_ended(self, event: dict[str, Any]) -> None:
        if not self._is_partner_event(event):
            return
        self.match = None
        await self.send_model(MatchEnded(match_id=event["match_id"], reason=event["reason"]))
        # The one left behind goes straight back to the queue.
        await self._enqueue()

    async def videochat_signal(self, event: dict[str, Any]) -> None:
        if self._is_partner_event(event):
            await self.send_model(
                SignalOut(match_id=event["match_id"], kind=event["kind"], data=event["data"])
            )

    async def videochat_chat(self, event: dict[str, Any]) -> None:
        if not self._is_partner_event(event):
            return
        await self.send_model(
            ChatOut(
                match_id=event["match_id"],
                sender="partner",
                text=event["text"],
                lang=event["lang"],
                translation=await self._translate(event["text"], event["lang"]),
            )
        )

    async def videochat_banned(self, event: dict[str, Any]) -> None:
        assert self.user_id is not None
        # Give up the queue place and the match now, not when the client acknowledges the
        # close: a banned user must not be matched in between.
        if self.claimed:
            self.claimed = False
            await live.socket_release(self.user_id, self.channel_name)
            await self._leave_all(reason="disconnected")
        await live.card_drop(self.channel_name)
        await self.send_error("banned", "you are banned from video chat")
        await self.close(code=CLOSE_FORBIDDEN)

    async def videochat_replaced(self, event: dict[str, Any]) -> None:
        # The newer socket already took over the queue place and ended our match.
        self.claimed = False
        await live.card_drop(self.channel_name)
        await self.send_error("replaced", "video chat was opened in another window")
        await self.close(code=CLOSE_REPLACED)

    # --- helpers
    def _require_hello(self) -> None:
        if self.session is None:
            raise ServiceError("hello_required", "send hello first")

    def _my_card(self) -> dict[str, str]:
        assert self.session is not None
        return {
            "country": self.country,
            "gender": self.session.gender,
            "language": self.session.language,
            "name": self.defaults["name"],
        }

    def _is_partner_event(self, event: dict[str, Any]) -> bool:
        return (
            self.match is not None
            and event.get("match_id") == self.match.match_id
            and event.get("from_id") == self.match.partner_id
        )

    async def _partner_channel(self, match_id: str) -> str:
        """The partner's channel, if `match_id` is this user's match right now."""
        assert self.user_id is not None
        refused = ServiceError("not_in_match", "that match is not yours or is over")
        if self.match is None or self.match.match_id != match_id:
            raise refused
        current = await mm.partner_of(self.user_id)
        if current is None or current[0] != match_id or current[1] != self.match.partner_id:
            raise refused
        return current[2]

    async def _filters(self) -> tuple[str | None, str | None]:
        assert self.session is not None and self.user_id is not None
        s = self.session
        if not (s.want_gender or s.want_country):
            return None, None
        # A subscription may lapse mid-session: filters are re-checked at every queue entry.
        if not await database_sync_to_async(selectors.filters_allowed)(user_id=self.user_id):
            s.want_gender = s.want_country = None
            self.filters_allowed = False
            await self.send_error("filters_not_allowed", "filters dropped: not entitled")
            return None, None
        return s.want_gender, s.want_country

    async def _seeker(self) -> mm.Seeker:
        assert self.session is not None and self.user_id is not None
        want_gender, want_country = await self._filters()
        return mm.Seeker(
            self.user_id,
            self.channel_name,
            self.session.gender,
            self.country,
            want_gender,
            want_country,
        )

    async def _send_waiting(self, seeker: mm.Seeker) -> None:
        await self.send_model(QueueWaiting(expected_wait_s=await mm.expected_wait(seeker)))

    async def _enqueue(self) -> None:
        assert self.session is not None and self.user_id is not None
        seeker = await self._seeker()
        # enqueue() would dissolve a pair we have not heard of yet (its "matched" event still
        # on the way) without telling the partner; end it here so the partner is told.
        ended = await mm.end_match(self.user_id, skip=False)
        if ended is not None:
            await self._tell_ended(ended, reason="left")
        if not self.waiting:
            self._queued_at = time.monotonic()
        found = await mm.enqueue(seeker)
        if found is None:
            self.waiting = True
            await self._send_waiting(seeker)
            return
        self.waiting = False
        metrics.videochat_matched(self._queued_at, pairs=1)
        self.match = CurrentMatch(found.match_id, found.partner_id, found.partner_channel_name)
        card = await live.card_get(found.partner_channel_name)
        # Matchmaking's view of the partner's gender and country is the one it matched on.
        card.update(gender=found.partner_gender or "", country=found.partner_country or "")
        # The partner first, so its answer side knows the match before our offer arrives.
        await send_to(
            found.partner_channel_name,
            events.Matched(
                match_id=found.match_id,
                from_id=self.user_id,
                from_channel=self.channel_name,
                card=self._my_card(),
            ),
        )
        await self.send_model(
            MatchFound(match_id=found.match_id, role="offer", partner=_partner_card(card))
        )

    async def _leave_all(self, *, reason: str) -> None:
        """Out of the queue and out of any match; the partner is told and re-queued."""
        assert self.user_id is not None
        self.waiting = False
        self.match = None
        await mm.dequeue(self.user_id)
        ended = await mm.end_match(self.user_id, skip=False)
        if ended is not None:
            await self._tell_ended(ended, reason=reason)

    async def _tell_ended(self, ended: tuple[str, int, str], *, reason: str) -> None:
        assert self.user_id is not None
        match_id, _partner_id, partner_channel = ended
        await send_to(
            partner_channel, events.Ended(match_id=match_id, from_id=self.user_id, reason=reason)
        )

    async def _translate(self, text: str, source: str) -> str | None:
        target = self.session.translate_to if self.session else ""
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
