"""The CBLINE socket (/ws/cbline/), docs/protocols/cbline.md.

Thin: BaseConsumer authenticates, size- and rate-limits and validates every text frame
against voice.schemas; handlers here call voice.services / voice.floor / voice.selectors and
send what they return. The floor's state machine is voice.floor's: the socket only keeps its
`Seat` and sends each outcome. Member and moderation events travel through Channels groups.
Audio and the floor's announcements (floor.taken, floor.released) never do: they go through
the per-process relay (voice.relay on realtime.fanout), which the floor holder's packets are
handed to after a check that costs no I/O (the seat is the socket's own state).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from pydantic import ValidationError

from accounts.countries import country_name, flag
from realtime import admission, liveness
from realtime.consumers import BaseConsumer
from realtime.errors import NotAllowed, ServiceError
from realtime.events import send_now
from realtime.fanout import resp_command
from realtime.keys import rate_key
from realtime.ratelimit import LeasedTokens, allow_on
from realtime.rawsocket import SCOPE_KEY, RawSocket, Write, text_frame

from . import announce, events, floor, selectors, services
from .keys import channel_group, sanctions_version_key, voice_user_group
from .models import Channel
from .relay import get_relay
from .schemas import (
    BanList,
    ChannelInfo,
    ChannelJoin,
    ChannelJoined,
    ChannelLeave,
    ChannelLeft,
    FloorRelease,
    FloorRequest,
    LocationClear,
    LocationOk,
    LocationSet,
    Me,
    Member,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
    ModBan,
    ModBans,
    Moderated,
    ModKick,
    ModMute,
    ModOk,
    ModUnban,
    ModUnmute,
    ReleaseReason,
    TxFetch,
    TxReplay,
    TxReplayEnd,
    inbound_adapter,
)
from .selectors import JoinState

log = logging.getLogger(__name__)
db = database_sync_to_async

# Presence chatter is O(members) per join or leave, O(members²) for a crowd arriving: past
# these sizes a joiner sees part of the list (and the count), and joins and leaves are not
# announced one by one. Audio is unaffected (the relay does not use groups).
MEMBER_LIST_LIMIT = 200
MEMBER_EVENTS_LIMIT = 200
# Rate tokens a socket takes from its user's bucket at once (realtime.ratelimit.LeasedTokens).
RATE_LEASE = 8


class VoiceConsumer(BaseConsumer):
    inbound = inbound_adapter
    rate_scope = "voice"
    joined_before = False  # a reconnect storm's sockets each rejoin at once: the first
    # join waits for an admission place, as the connects do (realtime.admission)

    channel: Channel | None = None
    seat: floor.Seat  # the socket's part in the floor (voice.floor changes it)
    has_location = False
    country = ""
    nickname = ""
    raw_socket: RawSocket | None = None  # the relay writes audio here when the server allows
    rate_tokens: LeasedTokens | None = None  # this socket's share of the user's rate bucket

    # --- lifecycle
    async def on_connect(self) -> None:
        assert self.user_id is not None
        self.seat = floor.Seat(user_id=self.user_id)
        self.raw_socket = self.scope.get(SCOPE_KEY)
        # The peer's address; behind a proxy the server is run with --proxy-headers (daphne
        # and uvicorn both), which puts the forwarded client address here instead.
        client = self.scope.get("client") or [None]
        logged, self.nickname = selectors.profile_nickname(self.user)
        # The log keeps the address's country for its aggregates; others see it only while
        # the user shares a location (`_shown_country`).
        self.country = await services.connection_log_add(
            user_id=self.user_id, ip=client[0], device=self.device, nickname=logged
        )

    def connect_groups(self) -> list[str]:
        assert self.user_id is not None
        return [*super().connect_groups(), voice_user_group(self.user_id)]

    async def on_disconnect(self, code: int) -> None:
        try:
            if self.channel is not None:
                await self._leave_channel("disconnected")
        finally:
            if self.has_location:
                await services.location_clear(
                    user_id=self.user_id or 0,
                    socket=self.channel_name,
                    process_id=liveness.process_id(),
                )
                self.has_location = False

    # --- channels
    async def on_channel_join(self, msg: ChannelJoin) -> None:
        if self.joined_before:
            await self._join_channel(msg)
            return
        self.joined_before = True
        async with admission.place():  # in line with the connects of a reconnect storm
            await self._join_channel(msg)

    async def _join_channel(self, msg: ChannelJoin) -> None:
        uid = self._uid
        version = await self._sanctions_version()  # before the admission reads them
        admitted = await services.channel_admit(
            channel_id=msg.channel_id, user=self.user, password=msg.password
        )
        channel = admitted.channel
        if self.channel is not None:
            await self._leave_channel("released")
        floor.sanctions_known(
            self.seat, channel_id=channel.pk, version=version, until=admitted.sanctions
        )
        if services.channel_socket_enter_supported():
            first, sockets, countries, state = await self._enter(channel)
        else:
            first, sockets, countries, state = await self._enter_step_by_step(channel)
        members = await services.members_describe(
            channel, countries, limit=MEMBER_LIST_LIMIT, first=uid
        )
        me = next(m for m in members if m.user_id == uid)
        # Location is the user's (another tab may have shared it), not the socket's.
        snap = await selectors.join_snapshot_of(state, viewer_id=uid, range_km=channel.range_km)
        # The channel's bans, read here once a process (until they change), not at a press.
        await floor.bans_prepare(channel.pk, snap.sanctions_version)
        await self.send_model(
            ChannelJoined(
                channel=ChannelInfo(
                    id=channel.pk,
                    name=channel.name,
                    description=channel.description,
                    range_km=channel.range_km,
                    is_protected=channel.is_protected,
                ),
                members=members,
                member_count=len(countries),
                me=Me(
                    user_id=uid,
                    has_location=self.has_location or snap.located,
                    range_km=channel.range_km,
                    is_moderator=me.is_moderator,
                ),
                talker=snap.talker,
                recent=snap.recent,
            )
        )
        if first and sockets <= MEMBER_EVENTS_LIMIT:
            announce.current().joined(channel.pk, self.channel_name, me)

    async def _sanctions_version(self) -> bytes | None:
        """selectors.sanctions_version, on the relay's lean connection as the join's other
        Redis steps (a redis-py GET was 2.7 % of a reconnect storm's server time)."""
        conn = await get_relay().connection()
        (version,) = await conn.call(resp_command(b"GET", sanctions_version_key(self._uid)), 1)
        return version  # type: ignore[no-any-return]

    async def _enter(self, channel: Channel) -> tuple[bool, int, dict[int, str | None], JoinState]:
        """Relay first, then group, socket and snapshot in one script: nothing said meanwhile
        is missed. (whether the user's first socket there, its sockets, who is live with
        their countries, the live state read)."""
        relay = get_relay()
        await relay.join(channel.pk, self)
        try:
            entered = await services.channel_socket_enter(
                channel_id=channel.pk,
                socket=self.channel_name,
                user_id=self._uid,
                country=self.country,
                process_id=liveness.process_id(),
            )
        except BaseException:
            await relay.leave(channel.pk, self)  # not in the channel: hear nothing of it
            raise
        self.joined_by_script(channel_group(channel.pk))
        self.channel = channel
        entered.live.setdefault(self._uid, self._shown_country(entered.snapshot.located))
        return entered.first, entered.sockets, entered.live, entered.snapshot

    async def _enter_step_by_step(
        self, channel: Channel
    ) -> tuple[bool, int, dict[int, str | None], JoinState]:
        """`_enter` where the channel layer is not in REDIS_URL's Redis: group and relay
        first, then the snapshot."""
        await self.join(channel_group(channel.pk))
        first, sockets, countries = await services.channel_socket_join(
            channel_id=channel.pk,
            socket=self.channel_name,
            user_id=self._uid,
            country=self.country,
            process_id=liveness.process_id(),
        )
        self.channel = channel
        await get_relay().join(channel.pk, self)
        state = await selectors.join_state(channel.pk, viewer_id=self._uid)
        countries.setdefault(self._uid, self._shown_country(state.located))
        return first, sockets, countries, state

    async def on_channel_leave(self, msg: ChannelLeave) -> None:
        channel = self._require_channel()
        await self._leave_channel("released")
        await self.send_model(ChannelLeft(channel_id=channel.pk))

    async def _leave_channel(self, reason: ReleaseReason) -> None:
        channel = self.channel
        if channel is None:
            return
        await floor.end(self.seat, reason)
        self.channel = None
        await get_relay().leave(channel.pk, self)
        last, sockets = await services.channel_socket_remove(
            channel_id=channel.pk,
            socket=self.channel_name,
            user_id=self._uid,
            process_id=liveness.process_id(),
        )
        await self.leave(channel_group(channel.pk))
        if last and sockets < MEMBER_EVENTS_LIMIT:
            await announce.current().settled(channel.pk)  # our join, if still queued, first
            await send_now(channel_group(channel.pk), events.MemberLeft(user_id=self._uid))

    # --- location
    async def on_location_set(self, msg: LocationSet) -> None:
        await services.location_set(
            user_id=self._uid,
            lat=msg.lat,
            lon=msg.lon,
            socket=self.channel_name,
            process_id=liveness.process_id(),
        )
        self.has_location = True
        await self._send_location_ok()

    async def on_location_clear(self, msg: LocationClear) -> None:
        await services.location_clear(
            user_id=self._uid, socket=self.channel_name, process_id=liveness.process_id()
        )
        self.has_location = False
        await self._send_location_ok()

    def _shown_country(self, located: bool) -> str | None:
        """The country others may see of this user: only while they share a location (the
        user's, perhaps from another tab), else None."""
        return self.country if located or self.has_location else None

    async def _send_location_ok(self) -> None:
        # The country others see: the connection's, never from the coordinates, and the
        # coordinates never leave the server.
        cc = self.country if self.has_location else ""
        await self.send_model(
            LocationOk(
                has_location=self.has_location,
                country=cc,
                country_name=country_name(cc),
                flag=flag(cc),
            )
        )

    async def rate_allow(self) -> bool:
        # The user's bucket in Redis, as BaseConsumer keeps it, on the relay's own connection
        # and RATE_LEASE tokens at a time: a press after the join (200 at once, say) costs no
        # round trip for it, and no redis-py command (nor pool connection opened mid-burst).
        assert self.user_id is not None
        if self.rate_tokens is None:
            self.rate_tokens = LeasedTokens(RATE_LEASE)
        key = rate_key(self.rate_scope, self.user_id)

        async def take(cost: int) -> bool:
            conn = await get_relay().connection()
            capacity, per_second = self.rate_capacity, self.rate_per_second
            return await allow_on(conn, key, capacity=capacity, per_second=per_second, cost=cost)

        return await self.rate_tokens.allow(take)

    # --- floor (voice.floor decides; the socket sends what it returns)
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        press = None if text_data is None else self._lean_press(text_data)
        if press is None:
            await super().receive(text_data=text_data, bytes_data=bytes_data)
        else:
            await self.guard(self._press(press, lean=True), press.ref)

    def _lean_press(self, text: str) -> FloorRequest | None:
        """A valid floor.request that would go straight to the floor's take (voice.floor's
        `press_ready`): its rate tokens are taken in that same step (`_press`), not in a
        round trip before it. Anything else (None) takes BaseConsumer's way: size, rate,
        parse, handler."""
        channel = self.channel
        if (
            channel is None
            or '"floor.request"' not in text
            or len(text) * 4 > self.max_text_bytes  # surely under the size limit
            or not floor.press_ready(self.seat, channel.pk)
        ):
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("type") != "floor.request":
            return None
        try:
            return FloorRequest.model_validate(data)
        except ValidationError:
            return None

    async def on_floor_request(self, msg: FloorRequest) -> None:
        await self._press(msg, lean=False)

    async def _press(self, msg: FloorRequest, *, lean: bool) -> None:
        channel = self._require_channel()
        charge = None
        if lean:  # BaseConsumer took no rate token for this frame: the take does
            if self.rate_tokens is None:
                self.rate_tokens = LeasedTokens(RATE_LEASE)
            size = self.rate_tokens.wanted()
            if size:
                assert self.user_id is not None
                key = rate_key(self.rate_scope, self.user_id)
                charge = floor.RateCharge(key, self.rate_capacity, self.rate_per_second, size)
        outcome = await floor.request(
            self.seat,
            channel=channel,
            nickname=self.nickname,
            mode=msg.mode,
            origin=self.channel_name,
            process_id=liveness.process_id(),
            rate=charge,
        )
        if charge is not None and self.rate_tokens is not None:
            if charge.taken is None:  # refused before its take: charged the usual way
                allowed = await self.rate_allow()
            else:
                allowed = self.rate_tokens.settle(charge.size, charge.taken)
            if not allowed:
                await self.send_error("rate_limited", "too many messages, slow down")
                return
        # 200 presses at once: the grant goes out as the floor's announcements do, not
        # through the ASGI send's layers.
        granted = outcome.reply
        if granted is not None and get_relay().reply(channel.pk, self, granted.model_dump_json()):
            return
        await self._send_outcome(outcome)

    async def on_floor_release(self, msg: FloorRelease) -> None:
        self._require_channel()
        await self._send_outcome(await floor.release(self.seat, tx_id=msg.tx_id))

    async def _send_outcome(self, outcome: floor.FloorOutcome) -> None:
        if outcome.refusal is not None:
            raise outcome.refusal  # an error frame, with the request's ref
        if outcome.reply is not None:
            await self.send_model(outcome.reply)

    # --- audio (hot path: no database, one Redis round trip in the relay)
    async def on_binary(self, data: bytes) -> None:
        self._require_channel()
        await floor.audio(self.seat, data)

    # --- replay of a missed transmission
    async def on_tx_fetch(self, msg: TxFetch) -> None:
        about, packets = await selectors.transmission_replay(msg.tx_id, viewer_id=self._uid)
        await self.send_model(TxReplay(**about))
        for packet in packets:
            await self.send(bytes_data=packet)
        await self.send_model(TxReplayEnd(**about))

    # --- moderation
    async def on_mod_mute(self, msg: ModMute) -> None:
        await self._moderate("mute", msg.user_id, msg.minutes)

    async def on_mod_unmute(self, msg: ModUnmute) -> None:
        await self._moderate("unmute", msg.user_id, 0)

    async def on_mod_kick(self, msg: ModKick) -> None:
        await self._moderate("kick", msg.user_id, 0)

    async def on_mod_ban(self, msg: ModBan) -> None:
        await self._moderate("ban", msg.user_id, msg.minutes)

    async def on_mod_unban(self, msg: ModUnban) -> None:
        await self._moderate("unban", msg.user_id, 0)

    async def on_mod_bans(self, msg: ModBans) -> None:
        channel = self._require_channel()
        if not await db(selectors.may_moderate)(channel, self.user):
            raise NotAllowed("only the channel's moderators may do that")
        await self.send_model(BanList(bans=await db(selectors.channel_bans)(channel.pk)))

    async def _moderate(self, action: str, target_id: int, minutes: int) -> None:
        channel = self._require_channel()
        result = await db(services.channel_member_moderate)(
            channel_id=channel.pk,
            moderator=self.user,
            target_id=target_id,
            action=action,
            minutes=minutes,
        )
        await self.send_model(ModOk(action=result.action, user_id=target_id))  # type: ignore[arg-type]

    # --- group events: only serialise to the socket (or act on this socket's own state)
    async def voice_member_joined(self, event: dict[str, Any]) -> None:
        if event["origin"] != self.channel_name:
            await self.send_model(MemberJoined(member=event["member"]))

    async def voice_members_joined(self, event: dict[str, Any]) -> None:
        others = [j for j in event["joined"] if j["origin"] != self.channel_name]
        frames = [j.get("frame") for j in others]  # rendered once by the joiner's process
        raw = self.raw_socket
        if others and raw is not None and all(frames):
            # A crowd's frames in one write, under the ASGI send (a storm's every member
            # hears each joiner of its channel: one send each was 3 % of its server time).
            # Nothing else is queued on the socket when the write is taken (uvicorn writes
            # an ASGI send at once, else `writable` is clear and this is refused): in order.
            data = b"".join(text_frame(f.encode()) for f in frames)  # type: ignore[union-attr]
            if raw.write(data) is Write.SENT:
                return
        for joiner, frame in zip(others, frames, strict=True):
            if frame:
                await self.send(text_data=frame)
            else:
                await self.send_model(MemberJoined(member=joiner["member"]))

    async def voice_member_updated(self, event: dict[str, Any]) -> None:
        await self.send_model(MemberUpdated(member=event["member"]))

    async def voice_location_changed(self, event: dict[str, Any]) -> None:
        """The user started or stopped sharing a location: the channel sees the country
        shown or gone."""
        if self.channel is not None:
            await self._announce(events.MemberUpdated, await self._describe_me(self.channel))

    async def voice_member_left(self, event: dict[str, Any]) -> None:
        if event["user_id"] != self.user_id:
            await self.send_model(MemberLeft(user_id=event["user_id"]))

    async def voice_moderated(self, event: dict[str, Any]) -> None:
        """A moderator acted on this user: tell the page, and for a kick or ban leave."""
        channel = self.channel
        if channel is None or channel.pk != event["channel_id"] or event["action"] == "unbanned":
            return
        await self.send_model(Moderated(action=event["action"], until=event["until"]))
        if event["action"] != "unmuted":
            await floor.end(self.seat, "moderated")
        if event["action"] in ("muted", "unmuted"):
            await self._announce(events.MemberUpdated, await self._describe_me(channel))
        else:
            await self._leave_channel("moderated")
            await self.send_model(ChannelLeft(channel_id=channel.pk))

    async def voice_channel_closed(self, event: dict[str, Any]) -> None:
        """Staff deleted the channel this socket is in: leave it."""
        channel = self.channel
        if channel is None or channel.pk != event["channel_id"]:
            return
        await self._leave_channel("moderated")
        await self.send_model(ChannelLeft(channel_id=channel.pk))

    async def voice_identity_changed(self, event: dict[str, Any]) -> None:
        self.nickname = await db(selectors.nickname_of)(self._uid)
        if self.channel is not None:
            await self._announce(events.MemberUpdated, await self._describe_me(self.channel))

    # --- helpers
    @property
    def _uid(self) -> int:
        assert self.user_id is not None
        return self.user_id

    def _require_channel(self) -> Channel:
        if self.channel is None:
            raise ServiceError("not_in_channel", "join a channel first")
        return self.channel

    async def _describe_me(self, channel: Channel) -> Member:
        # The user's location, not this socket's: expired or cleared from another tab.
        shown = self.country if await selectors.has_location(self._uid) else None
        return await db(selectors.member_describe)(channel, self._uid, shown)

    async def _announce(
        self, kind: type[events.MemberJoined | events.MemberUpdated], member: Member
    ) -> None:
        assert self.channel is not None
        await announce.current().settled(self.channel.pk)  # after a join still queued
        await send_now(
            channel_group(self.channel.pk), kind(origin=self.channel_name, member=member)
        )
