"""The CBLINE socket (/ws/cbline/), docs/protocols/cbline.md.

Thin: BaseConsumer authenticates, size- and rate-limits and validates every text frame
against voice.schemas; handlers here authorise, call voice.services / voice.selectors and
reply. Member and moderation events travel through Channels groups. Audio and the floor's
announcements (floor.taken, floor.released) never do: they go through the per-process relay
(voice.relay), which the floor holder's packets are handed to after a check that costs no
I/O (the floor is the socket's own state).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from accounts.countries import country_name, flag
from realtime import liveness, metrics
from realtime.consumers import BaseConsumer
from realtime.errors import NotAllowed, ServiceError
from realtime.events import send_now
from realtime.rawsocket import SCOPE_KEY, RawSocket

from . import events, selectors, services
from .keys import channel_group, voice_user_group
from .models import Channel, SanctionKind
from .relay import get_relay
from .schemas import (
    BanList,
    ChannelInfo,
    ChannelJoin,
    ChannelJoined,
    ChannelLeave,
    ChannelLeft,
    FloorGranted,
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
    PacketHeader,
    ReleaseReason,
    TxFetch,
    TxReplay,
    TxReplayEnd,
    inbound_adapter,
)

log = logging.getLogger(__name__)
db = database_sync_to_async

# Presence chatter is O(members) per join or leave, O(members²) for a crowd arriving: past
# these sizes a joiner sees part of the list (and the count), and joins and leaves are not
# announced one by one. Audio is unaffected (the relay does not use groups).
MEMBER_LIST_LIMIT = 200
MEMBER_EVENTS_LIMIT = 200


class VoiceConsumer(BaseConsumer):
    inbound = inbound_adapter
    rate_scope = "voice"

    channel: Channel | None = None
    floor: services.Floor | None = None
    has_location = False
    country = ""
    nickname = ""
    raw_socket: RawSocket | None = None  # the relay writes audio here when the server allows
    # (version, kind -> end ms or None) of the user's sanctions in the current channel.
    _sanctions: tuple[bytes | None, dict[str, int | None]] | None = None
    _floor_deadline = 0.0
    _floor_budget: services.TalkBudget | None = None
    _floor_timer: asyncio.Task[None] | None = None

    # --- lifecycle
    async def on_connect(self) -> None:
        assert self.user_id is not None
        self.raw_socket = self.scope.get(SCOPE_KEY)
        # The peer's address; behind a proxy the server is run with --proxy-headers (daphne
        # and uvicorn both), which puts the forwarded client address here instead.
        client = self.scope.get("client") or [None]
        entry = await db(services.connection_log_write)(
            user_id=self.user_id, ip=client[0], device=self.device
        )
        self.country = entry.country
        self.nickname = await db(selectors.nickname_of)(self.user_id)
        await self.join(voice_user_group(self.user_id))

    async def on_disconnect(self, code: int) -> None:
        try:
            if self.channel is not None:
                await self._leave_channel("disconnected")
        finally:
            if self.has_location:
                await services.location_clear(user_id=self.user_id or 0)
                self.has_location = False

    # --- channels
    async def on_channel_join(self, msg: ChannelJoin) -> None:
        channel = await services.channel_admit(
            channel_id=msg.channel_id, user=self.user, password=msg.password
        )
        if self.channel is not None:
            await self._leave_channel("released")
        self._sanctions = None
        uid = self._uid
        # Group and relay first, then the snapshot: nothing said meanwhile is missed.
        await self.join(channel_group(channel.pk))
        first, sockets = await services.channel_socket_add(
            channel_id=channel.pk,
            socket=self.channel_name,
            user_id=uid,
            country=self.country,
            process_id=liveness.process_id(),
        )
        self.channel = channel
        await get_relay().join(channel.pk, self)
        countries = await selectors.live_members(channel.pk)
        countries.setdefault(uid, self.country)
        members = await db(selectors.members_describe)(
            channel, countries, limit=MEMBER_LIST_LIMIT, first=uid
        )
        me = next(m for m in members if m.user_id == uid)
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
                    # Location is the user's (another tab may have shared it), not the socket's.
                    has_location=self.has_location or await selectors.has_location(uid),
                    range_km=channel.range_km,
                    is_moderator=me.is_moderator,
                ),
                talker=await selectors.talker_of(
                    channel.pk, viewer_id=uid, range_km=channel.range_km
                ),
                recent=await selectors.recent_transmissions(channel.pk, viewer_id=uid),
            )
        )
        if first and sockets <= MEMBER_EVENTS_LIMIT:
            await self._announce(events.MemberJoined, me)

    async def on_channel_leave(self, msg: ChannelLeave) -> None:
        channel = self._require_channel()
        await self._leave_channel("released")
        await self.send_model(ChannelLeft(channel_id=channel.pk))

    async def _leave_channel(self, reason: ReleaseReason) -> None:
        channel = self.channel
        if channel is None:
            return
        if self.floor is not None:
            await self._end_floor(reason)
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
            await send_now(channel_group(channel.pk), events.MemberLeft(user_id=self._uid))

    # --- location
    async def on_location_set(self, msg: LocationSet) -> None:
        await services.location_set(user_id=self._uid, lat=msg.lat, lon=msg.lon)
        self.has_location = True
        await self._send_location_ok()

    async def on_location_clear(self, msg: LocationClear) -> None:
        await services.location_clear(user_id=self._uid)
        self.has_location = False
        await self._send_location_ok()

    async def _send_location_ok(self) -> None:
        # The country comes from the connection, never from the coordinates, and the
        # coordinates never leave the server.
        cc = self.country
        await self.send_model(
            LocationOk(
                has_location=self.has_location,
                country=cc,
                country_name=country_name(cc),
                flag=flag(cc),
            )
        )

    # --- floor
    async def on_floor_request(self, msg: FloorRequest) -> None:
        started = time.perf_counter()
        try:
            await self._floor_request(msg)
        except ServiceError as exc:
            metrics.FLOOR_REQUESTS.labels("busy" if exc.code == "busy" else "refused").inc()
            raise
        metrics.FLOOR_REQUESTS.labels("granted").inc()
        metrics.FLOOR_GRANT_SECONDS.observe(time.perf_counter() - started)

    async def _floor_request(self, msg: FloorRequest) -> None:
        channel = self._require_channel()
        if self.floor is not None:
            raise ServiceError("already_talking", "you hold the floor already")
        sanctions = await self._active_sanctions(channel.pk)
        if SanctionKind.BAN in sanctions:
            raise NotAllowed("you are banned from this channel", code="banned")
        if SanctionKind.MUTE in sanctions:
            raise NotAllowed("a moderator muted you in this channel", code="muted")
        floor, holder = await services.floor_take(
            channel_id=channel.pk,
            user_id=self._uid,
            nickname=self.nickname,
            mode=msg.mode,
            process_id=liveness.process_id(),
        )
        if floor is None:
            reason = await selectors.busy_reason(
                holder, viewer_id=self._uid, range_km=channel.range_km
            )
            raise ServiceError("busy", reason)
        try:
            # O(1) in the channel's size unless it is ranged and the talker located.
            recipients = await selectors.press_recipients(
                channel_id=channel.pk, talker_id=self._uid, range_km=channel.range_km
            )
            # Also floor.taken for every other socket in the channel, through the relay.
            await get_relay().transmission_start(
                channel.pk,
                floor.tx_id,
                self._uid,
                recipients.only,
                excluded=recipients.excluded,
                mode=msg.mode,
                nickname=floor.nickname,
                origin=self.channel_name,
            )
        except BaseException:
            await services.floor_release(channel_id=channel.pk, floor=floor)
            raise
        max_ms = settings.VOICE_MAX_TRANSMISSION_SECONDS * 1000
        self.floor = floor
        loop = asyncio.get_running_loop()
        self._floor_deadline = loop.time() + max_ms / 1000
        self._floor_budget = services.TalkBudget(started=loop.time())
        self._floor_timer = loop.create_task(self._floor_timeout(floor, max_ms / 1000))
        await self.send_model(
            FloorGranted(tx_id=floor.tx_id, max_ms=max_ms, packet_ms=settings.VOICE_PACKET_MS)
        )

    async def _active_sanctions(self, channel_id: int) -> set[str]:
        """Checked on every press, not only at join (staff may ban or mute in the admin while
        the user is connected), from a cache that the user's sanctions version in Redis
        vouches for: one Redis read instead of a database round trip."""
        version = await selectors.sanctions_version(self._uid)  # before the database read
        cached = self._sanctions
        if cached is None or cached[0] != version:
            until = await db(selectors.sanctions_until)(channel_id, self._uid)
            cached = self._sanctions = (version, until)
        return selectors.sanctions_in_force(cached[1], services.now_ms())

    async def on_floor_release(self, msg: FloorRelease) -> None:
        self._require_channel()
        if self.floor is None or self.floor.tx_id != msg.tx_id:
            raise ServiceError("no_floor", "you do not hold the floor for that transmission")
        await self._end_floor("released")

    async def _floor_timeout(self, floor: services.Floor, seconds: float) -> None:
        """Renew the floor's lease while the transmission lasts; end it at its maximum
        length, or at once if the lease was lost (Redis restarted, say)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        reason: ReleaseReason = "timeout"
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(left, settings.VOICE_FLOOR_LEASE_SECONDS / 3))
            if self.floor is not floor:
                return
            if loop.time() >= deadline:
                break
            try:
                if not await services.floor_renew(
                    channel_id=self._require_channel().pk, floor=floor
                ):
                    reason = "released"
                    break
            except Exception:
                log.warning("could not renew the floor of transmission %s", floor.tx_id)
        if self.floor is floor:
            self._floor_timer = None  # this task: _end_floor must not cancel itself
            try:
                await self._end_floor(reason)
            except Exception:
                log.exception("could not end transmission %s", floor.tx_id)

    async def _end_floor(self, reason: ReleaseReason) -> None:
        floor, channel = self.floor, self.channel
        if floor is None or channel is None:
            return
        self.floor = None  # first, so a packet or timer arriving meanwhile finds no floor
        if self._floor_timer is not None:
            self._floor_timer.cancel()
            self._floor_timer = None
        duration = await services.floor_release(channel_id=channel.pk, floor=floor)
        # floor.released reaches every socket in the channel (this one too) through the relay.
        await get_relay().transmission_end(
            channel.pk, floor.tx_id, talker_id=floor.user_id, duration_ms=duration, reason=reason
        )

    # --- audio (hot path: no database, one Redis round trip in the relay)
    async def on_binary(self, data: bytes) -> None:
        channel = self._require_channel()
        try:
            header = PacketHeader.parse(data)
        except ValueError:
            raise ServiceError(
                "bad_packet", "an audio packet is a 16-byte header (kind 1 or 2) and a payload"
            ) from None
        floor = self.floor
        if floor is None or header.tx_id != floor.tx_id:
            raise ServiceError("no_floor", "you do not hold the floor for that transmission")
        now = asyncio.get_running_loop().time()
        if now > self._floor_deadline:
            raise ServiceError("no_floor", "the transmission reached its maximum length")
        assert self._floor_budget is not None
        self._floor_budget.spend(now=now, size=len(data))  # pace and bytes of real speech
        if not await get_relay().audio(channel.pk, floor.tx_id, data):
            raise ServiceError("channel_full", "this channel holds as much audio as it may")

    # --- replay of a missed transmission
    async def on_tx_fetch(self, msg: TxFetch) -> None:
        relay = get_relay()
        stored = await relay.replay(msg.tx_id)
        if stored is None:
            raise ServiceError("not_found", "that transmission is no longer on the server")
        meta, packets = stored
        allowed = await db(selectors.is_member)(meta["channel_id"], self._uid)
        if not allowed or not await relay.may_hear(msg.tx_id, self._uid):
            raise NotAllowed("you were not a listener of that transmission")
        about = {
            "tx_id": msg.tx_id,
            "user_id": meta["talker_id"],
            "nickname": meta.get("nickname", ""),
            "mode": meta.get("mode", "webcodecs"),
        }
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

    async def voice_member_updated(self, event: dict[str, Any]) -> None:
        await self.send_model(MemberUpdated(member=event["member"]))

    async def voice_member_left(self, event: dict[str, Any]) -> None:
        if event["user_id"] != self.user_id:
            await self.send_model(MemberLeft(user_id=event["user_id"]))

    async def voice_moderated(self, event: dict[str, Any]) -> None:
        """A moderator acted on this user: tell the page, and for a kick or ban leave."""
        channel = self.channel
        if channel is None or channel.pk != event["channel_id"] or event["action"] == "unbanned":
            return
        await self.send_model(Moderated(action=event["action"], until=event["until"]))
        if self.floor is not None and event["action"] != "unmuted":
            await self._end_floor("moderated")
        if event["action"] in ("muted", "unmuted"):
            await self._announce(events.MemberUpdated, await self._describe_me(channel))
        else:
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
        return await db(selectors.member_describe)(channel, self._uid, self.country)

    async def _announce(
        self, kind: type[events.MemberJoined | events.MemberUpdated], member: Member
    ) -> None:
        assert self.channel is not None
        await send_now(
            channel_group(self.channel.pk), kind(origin=self.channel_name, member=member)
        )
