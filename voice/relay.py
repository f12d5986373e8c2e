"""CBLINE's audio relay: push-to-talk audio and the floor's announcements through the
per-process fan-out (realtime/fanout.py), never through Channels groups.

One Redis pub/sub channel per voice channel. First byte 0x00 = control message (JSON:
transmission start/end), anything else = the audio packet exactly as the protocol defines it
(first byte is its kind, 1 or 2; tx_id at offset 4). Control and audio of one channel share
one Redis channel, so a process always learns who may hear a transmission before its first
packet (Redis keeps the order of one publisher's messages on one channel). The same control
messages are the channel's floor.taken and floor.released announcements: each process writes
them to its own sockets, so a press costs O(processes) messages, not one per member, and
every listener reads floor.taken before the transmission's first packet.

What is kept of a transmission (meta, recipients, packets for replay) is
voice/transmissions.py's; who may talk is voice/floor.py's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from realtime import gc_policy, metrics
from realtime.fanout import Fanout, FanoutStats, Listener, RespConnection, resp_command
from realtime.redis import get_async_redis

from . import transmissions
from .keys import pubsub_channel, relay_client_name
from .schemas import FloorReleased, FloorTaken, ReleaseReason

log = logging.getLogger(__name__)

CONTROL = 0x00
HEADER_BYTES = 16
AUDIO_KINDS = (1, 2)
# How long a process remembers a finished transmission's recipients (late packets, replay).
ENDED_TX_GRACE_SECONDS = 5.0


def packet_tx_id(packet: bytes) -> int:
    return int.from_bytes(packet[4:8], "big")


@dataclass
class _Tx:
    """What a process needs to know to deliver one transmission's packets."""

    channel_id: int
    talker_id: int
    recipients: frozenset[int] | None  # None = everyone in the channel
    expires_at: float
    live: bool = True  # until its end message
    excluded: frozenset[int] = frozenset()  # banned: never, even with recipients None

    def may_hear(self, user_id: int | None) -> bool:
        if user_id is None or user_id == self.talker_id or user_id in self.excluded:
            return False
        return self.recipients is None or user_id in self.recipients


@dataclass(eq=False)
class Relay:
    """The audio relay of one event loop. Use `get_relay()`."""

    fanout: Fanout = field(init=False)
    _txs: dict[int, _Tx] = field(default_factory=dict)
    # Packets of a transmission whose meta is being fetched, in order.
    _waiting: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)
    _counts: metrics.RelayCounts = field(default_factory=metrics.RelayCounts)

    def __post_init__(self) -> None:
        self.fanout = Fanout(
            client_name=relay_client_name(f"{os.getpid()}:{id(self):x}"),
            pubsub_name=pubsub_channel,
            on_message=self._on_message,
            # Transmissions may have started while the subscriber was away.
            on_reconnect=self._txs.clear,
        )

    @property
    def client_name(self) -> str:
        """Names the pub/sub connection in CLIENT LIST (operators; the reconnect test)."""
        return self.fanout.client_name

    @property
    def stats(self) -> FanoutStats:
        """Audio frames delivered, dropped, failed; `unknown`: the transmission was gone."""
        return self.fanout.stats

    # --- local listeners
    async def join(self, channel_id: int, listener: Listener) -> None:
        """Deliver the channel's audio and floor announcements to `listener` from now on."""
        await self.fanout.join(channel_id, listener)

    async def leave(self, channel_id: int, listener: Listener) -> None:
        await self.fanout.leave(channel_id, listener)

    def local_listener_count(self, channel_id: int) -> int:
        return self.fanout.local_listener_count(channel_id)

    def gc_should_wait(self) -> bool:
        """A full collection stops the event loop for up to ~100 ms: not while someone
        whose audio passes through this process is talking (realtime/gc_policy.py)."""
        now = time.monotonic()
        return any(tx.live and tx.expires_at > now for tx in self._txs.values())

    # --- publishing (called by voice.floor for the talker's socket)
    async def connection(self) -> RespConnection:
        """The relay's own Redis connection: what goes out on it stays in order (a
        transmission's start before its audio)."""
        return await self.fanout.publisher()

    def connection_now(self) -> RespConnection | None:
        """The relay's connection if it is open (no await), else None."""
        return self.fanout.publisher_now()

    async def transmission_start(
        self,
        channel_id: int,
        tx_id: int,
        talker_id: int,
        recipients: set[int] | frozenset[int] | None,
        **kw: Any,
    ) -> None:
        """`transmission_start_nowait`, waiting for Redis' answer."""
        await (await self.transmission_start_nowait(channel_id, tx_id, talker_id, recipients, **kw))

    async def transmission_start_nowait(self, *args: Any, **kw: Any) -> asyncio.Future[list[Any]]:
        """Store and announce a transmission and who may hear it, before any of its audio,
        in one round trip: listeners everywhere get floor.taken (except the `origin` socket,
        the talker's own). With `recipients` None the cost does not grow with the channel:
        each process checks its own sockets against `excluded` (the channel's banned).
        Returns once written, with the future of Redis' answer: the audio goes out later on
        the same connection, so every listener hears the start first. The arguments are
        `transmission_start_on`'s after its connection."""
        return self.transmission_start_on(await self.fanout.publisher(), *args, **kw)

    def transmission_start_on(
        self,
        conn: RespConnection,
        channel_id: int,
        tx_id: int,
        talker_id: int,
        recipients: set[int] | frozenset[int] | None,
        *,
        excluded: frozenset[int] = frozenset(),
        mode: str = "webcodecs",
        nickname: str = "",
        origin: str = "",
        **meta: str | int,
    ) -> asyncio.Future[list[Any]]:
        """`transmission_start_nowait` on `conn` (the relay's connection, `connection_now`),
        without awaiting: queued for this turn's write, in order with what follows on it."""
        started_at = int(time.time() * 1000)
        control = {
            "e": "start",
            "tx": tx_id,
            "ch": channel_id,
            "talker": talker_id,
            "rcpt": None if recipients is None else sorted(recipients),
            "excl": sorted(excluded),
            "origin": origin,
            "say": FloorTaken(
                tx_id=tx_id,
                user_id=talker_id,
                nickname=nickname,
                started_at=started_at,
                mode=mode,
            ).model_dump_json(),
            "say_out": FloorTaken(
                tx_id=tx_id,
                user_id=None,
                nickname="",
                started_at=started_at,
                mode=mode,
                in_range=False,
            ).model_dump_json(),
        }
        commands = transmissions.start_commands(
            channel_id=channel_id,
            tx_id=tx_id,
            talker_id=talker_id,
            recipients=recipients,
            excluded=excluded,
            started_at=started_at,
            mode=mode,
            nickname=nickname,
            meta=meta,
        )
        commands.append(
            resp_command(b"PUBLISH", pubsub_channel(channel_id), _control_frame(control))
        )
        return conn.call(b"".join(commands), len(commands))

    async def audio(self, channel_id: int, tx_id: int, packet: bytes) -> bool:
        """Publish one packet and keep it for replay, in one round trip to Redis; False (and
        nothing published or kept) when the channel already holds
        VOICE_CHANNEL_MAX_HELD_BYTES of audio."""
        if len(packet) < HEADER_BYTES or packet[0] not in AUDIO_KINDS:
            raise ValueError("not an audio packet (16-byte header, kind 1 or 2)")
        if packet_tx_id(packet) != tx_id:
            raise ValueError("packet header names another transmission")
        return await transmissions.store_and_publish(
            await self.fanout.publisher(), channel_id=channel_id, tx_id=tx_id, packet=packet
        )

    async def transmission_end(
        self,
        channel_id: int,
        tx_id: int,
        *,
        talker_id: int = 0,
        duration_ms: int = 0,
        reason: ReleaseReason = "released",
    ) -> None:
        """Announce the end (floor.released to every listener); stored audio keeps its TTL
        so it can still be replayed."""
        pipe = get_async_redis().pipeline(transaction=False)
        await transmissions.stage_end(pipe, tx_id=tx_id, ended_at=int(time.time() * 1000))
        say = FloorReleased(
            tx_id=tx_id, user_id=talker_id, duration_ms=duration_ms, reason=reason
        ).model_dump_json()
        say_out = FloorReleased(
            tx_id=tx_id, user_id=None, duration_ms=0, reason=reason, in_range=False
        ).model_dump_json()
        control = {"e": "end", "tx": tx_id, "say": say, "say_out": say_out}
        pipe.publish(pubsub_channel(channel_id), _control_frame(control))
        await pipe.execute()

    # --- inbound from Redis (called from the fan-out's on_message: no awaiting)
    def _on_message(self, channel_id: int, data: bytes) -> None:
        if data[0] == CONTROL:
            self._on_control(channel_id, json.loads(data[1:]))
            return
        if len(data) < HEADER_BYTES:
            return
        tx_id = packet_tx_id(data)
        waiting = self._waiting.get(tx_id)
        if waiting is not None:  # its meta is being fetched: keep the order
            waiting.append((channel_id, data))
            return
        tx = self._txs.get(tx_id)
        if tx is None:
            self._waiting[tx_id] = [(channel_id, data)]
            self.fanout.spawn(self._resolve(tx_id))
            return
        self._deliver_checked(channel_id, data, tx)

    async def _resolve(self, tx_id: int) -> None:
        """Packets of a transmission that started before we subscribed: fetch who may hear
        it, then deliver what queued meanwhile, in order."""
        try:
            tx = await self._load_tx(tx_id)
        except Exception:
            log.warning("voice relay: could not load transmission %s", tx_id, exc_info=True)
            tx = None
        for channel_id, data in self._waiting.pop(tx_id, []):
            self._deliver_checked(channel_id, data, tx)

    async def _load_tx(self, tx_id: int) -> _Tx | None:
        """A process that subscribed after the start message learns the recipients here."""
        heard = await transmissions.heard(tx_id)
        if heard is None:
            return None
        tx = self._txs[tx_id] = _Tx(
            channel_id=heard.channel_id,
            talker_id=heard.talker_id,
            recipients=heard.recipients,
            expires_at=time.monotonic() + transmissions.held_window_seconds(),
            excluded=heard.excluded,
        )
        return tx

    def _deliver_checked(self, channel_id: int, data: bytes, tx: _Tx | None) -> None:
        if tx is None or tx.channel_id != channel_id:
            self.fanout.stats.unknown += 1
            return
        self.fan_out(channel_id, data, tx)

    def _on_control(self, channel_id: int, msg: dict[str, Any]) -> None:
        now = time.monotonic()
        tx_id = int(msg["tx"])
        if msg["e"] == "start":
            rcpt = msg.get("rcpt")
            started = _Tx(
                channel_id=int(msg["ch"]),
                talker_id=int(msg["talker"]),
                recipients=None if rcpt is None else frozenset(rcpt),
                expires_at=now + transmissions.held_window_seconds(),
                excluded=frozenset(msg.get("excl") or ()),
            )
            # As this channel's listeners know it (the message's own channel id).
            hears: _Tx | None = _Tx(
                channel_id=channel_id,
                talker_id=started.talker_id,
                recipients=started.recipients,
                expires_at=0,
                excluded=started.excluded,
            )
        else:
            hears = self._txs.get(tx_id)  # None: not known here, say nothing named
        if msg.get("say"):
            self.announce(
                channel_id,
                msg["say"],
                skip=msg.get("origin") or None,
                tx=hears,
                out_of_range=msg.get("say_out"),
            )
        if msg["e"] == "start":
            self._txs[tx_id] = started
            self._prune(now)
        elif msg["e"] == "end":
            tx = self._txs.get(tx_id)
            if tx is not None:
                tx.live = False
                tx.expires_at = min(tx.expires_at, now + ENDED_TX_GRACE_SECONDS)

    def _prune(self, now: float) -> None:
        for tx_id in [t for t, tx in self._txs.items() if tx.expires_at < now]:
            del self._txs[tx_id]

    # --- local delivery
    def announce(
        self,
        channel_id: int,
        text: str,
        *,
        skip: str | None = None,
        tx: _Tx | None = None,
        out_of_range: str | None = None,
    ) -> None:
        """Write a JSON text frame to every local socket of the channel (framed once). With
        `out_of_range`, sockets that may not hear `tx` (all, when `tx` is unknown) get that
        text instead: an announcement that names no one."""

        def text_for(listener: Listener) -> str | None:
            if skip is not None and getattr(listener, "channel_name", None) == skip:
                return None
            if out_of_range is None:
                return text
            uid = listener.user_id
            talker = tx is not None and uid == tx.talker_id
            if not talker and (tx is None or not tx.may_hear(uid)):
                return out_of_range
            return text

        self.fanout.write_text(channel_id, text_for)

    def reply(self, channel_id: int, listener: Listener, text: str) -> bool:
        """Write `text` to one socket of the channel as announcements are written (framed
        here, straight to its transport where the server allows); False: the socket is not
        on the channel here, send it through ASGI."""
        return self.fanout.write_text_to(channel_id, listener, text)

    def fan_out(self, channel_id: int, packet: bytes, tx: _Tx) -> None:
        """Write `packet` to every local listener of the channel allowed to hear `tx`."""
        started = time.perf_counter()
        self.fanout.write_binary(channel_id, packet, tx.may_hear)
        # Metrics once per packet, not per listener (realtime/metrics.py).
        metrics.RELAY_LAG_SECONDS.observe(time.perf_counter() - started)
        stats = self.fanout.stats
        self._counts.sync(stats.delivered, stats.dropped, stats.errors, stats.unknown)

    async def close(self) -> None:
        """Stop reading and drop every subscription (tests; process shutdown)."""
        await self.fanout.close()
        self._txs.clear()
        self._waiting.clear()


def _control_frame(payload: dict[str, Any]) -> bytes:
    return bytes([CONTROL]) + json.dumps(payload, separators=(",", ":")).encode()


_relays: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Relay] = weakref.WeakKeyDictionary()


def get_relay() -> Relay:
    """The relay of the running event loop (one per ASGI process in production)."""
    loop = asyncio.get_running_loop()
    relay = _relays.get(loop)
    if relay is None:
        relay = _relays[loop] = Relay()
        gc_policy.defer_while(relay)
    return relay


async def close_relay() -> None:
    """Close and forget this loop's relay (tests)."""
    relay = _relays.pop(asyncio.get_running_loop(), None)
    if relay is not None:
        await relay.close()
