"""Write one pre-framed WebSocket message to many sockets, below the ASGI send path.

A server's frames are never masked (RFC 6455 5.1), so a binary message is the same bytes for
every listener: the audio relay frames a packet once and writes it to each local socket's
transport. Going through ASGI instead costs, per listener, the consumer's `send`, the
session middleware's wrapper and the server's own framing: about 30 us a delivery under
uvicorn, against about 2 us here (benchmarks/ptt_fanout.py).

Only servers whose connection object we know get a raw socket (uvicorn's websockets-sansio
protocol); for any other, `raw_socket_for` returns None and callers use ASGI `send`.
`RawSocketMiddleware` finds it once per connection and puts it in the scope.
"""

from __future__ import annotations

import enum
import logging
import struct
from typing import Any, Protocol

from channels.middleware import BaseMiddleware

from .metrics import RAW_SOCKET_FALLBACKS

log = logging.getLogger(__name__)
# What _UvicornSansIO reads of uvicorn's protocol object (private: uvicorn is held at the
# tested version in pyproject.toml, and this check makes a changed one loud, not broken).
SANSIO_ATTRIBUTES = ("disconnected", "close_sent", "handshake_complete", "conn", "writable")

SCOPE_KEY = "raw_socket"
# Raw writes are for real-time data: past this much unsent (a few seconds of voice), more
# would only arrive too late to be played, so the frame is refused for this socket.
MAX_BUFFERED_BYTES = 16 * 1024


class Write(enum.Enum):
    SENT = "sent"
    BEHIND = "behind"  # the socket's write buffer is over its high-water mark
    CLOSED = "closed"


class RawSocket(Protocol):
    def write(self, frame: bytes) -> Write: ...


def binary_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented binary message (FIN + opcode 2)."""
    return _frame(0x82, payload)


def text_frame(utf8: bytes) -> bytes:
    """One unmasked, unfragmented text message (FIN + opcode 1); `utf8` must be UTF-8."""
    return _frame(0x81, utf8)


def _frame(first: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 1 << 16:
        return bytes((first, 126)) + struct.pack("!H", n) + payload
    return bytes((first, 127)) + struct.pack("!Q", n) + payload


class _UvicornSansIO:
    """uvicorn's `--ws websockets-sansio` connection. A whole frame per transport.write keeps
    our frames from interleaving with the server's own; an unmasked frame without RSV1 is
    valid whether or not permessage-deflate was negotiated (RFC 7692 6)."""

    __slots__ = ("open_state", "proto", "transport")

    def __init__(self, proto: Any, open_state: Any) -> None:
        self.proto = proto
        self.transport = proto.transport
        self.open_state = open_state

    def write(self, frame: bytes) -> Write:
        p = self.proto
        if (
            p.disconnected
            or p.close_sent
            or not p.handshake_complete
            or p.conn.state is not self.open_state
            or self.transport.is_closing()
        ):
            return Write.CLOSED
        # A listener that cannot keep up with real time loses packets instead of hearing
        # them late and growing our memory (uvicorn also clears `writable` when the
        # transport pauses writing).
        if not p.writable.is_set() or self.transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            return Write.BEHIND
        self.transport.write(frame)
        return Write.SENT


def raw_socket_for(send: Any) -> RawSocket | None:
    """A raw socket behind the server's ASGI `send`, or None for an unknown server."""
    proto = getattr(send, "__self__", None)
    if proto is None:
        return None
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
        from websockets.protocol import State
    except ImportError:  # pragma: no cover - uvicorn is a dependency
        return None
    if isinstance(proto, WebSocketsSansIOProtocol):
        missing = [a for a in SANSIO_ATTRIBUTES if not hasattr(proto, a)]
        transport = getattr(proto, "transport", None)
        if transport is None or not hasattr(transport, "get_write_buffer_size"):
            missing.append("transport")
        if missing:
            RAW_SOCKET_FALLBACKS.inc()
            log.warning(
                "raw socket writes off for this socket: uvicorn's websockets-sansio protocol "
                "lacks %s; audio falls back to the ASGI send",
                ", ".join(missing),
            )
            return None
        return _UvicornSansIO(proto, State.OPEN)
    return None


class RawSocketMiddleware(BaseMiddleware):
    """Outermost WebSocket middleware: the only place that sees the server's own `send`."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            # Set in place, not on a copy: the server made this scope for this one socket, and
            # a copy would be held for the socket's life (benchmarks/idle_memory.py).
            scope[SCOPE_KEY] = raw_socket_for(send)
        return await self.inner(scope, receive, send)
