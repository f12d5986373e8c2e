"""If uvicorn's private protocol object is not what realtime/rawsocket.py reads, the raw path
is not used: the socket falls back to the ASGI send, with a warning and a counter."""

from __future__ import annotations

import logging
import types

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from realtime.metrics import RAW_SOCKET_FALLBACKS
from realtime.rawsocket import raw_socket_for


def test_changed_uvicorn_internals_fall_back_loudly(caplog):
    # A protocol object of the right class whose attributes are not the tested version's
    # (made without __init__, as a renamed or removed field would leave it).
    proto = WebSocketsSansIOProtocol.__new__(WebSocketsSansIOProtocol)
    send = types.MethodType(lambda self, message: None, proto)
    before = RAW_SOCKET_FALLBACKS._value.get()
    with caplog.at_level(logging.WARNING, logger="realtime.rawsocket"):
        assert raw_socket_for(send) is None
    assert RAW_SOCKET_FALLBACKS._value.get() == before + 1
    assert any("falls back to the ASGI send" in r.getMessage() for r in caplog.records)


def test_other_servers_use_the_asgi_send_quietly(caplog):
    class DaphneLike:
        async def send(self, message: dict) -> None: ...

    before = RAW_SOCKET_FALLBACKS._value.get()
    with caplog.at_level(logging.WARNING, logger="realtime.rawsocket"):
        assert raw_socket_for(DaphneLike().send) is None
    assert RAW_SOCKET_FALLBACKS._value.get() == before
    assert not caplog.records
