"""benchmarks/idle_memory.py's lean client: it completes the handshake a browser makes
(offering permessage-deflate), says hello, answers pings, and reports what the server
agreed to, so a socket it counts as open really is open and idle."""

from __future__ import annotations

import asyncio
import os

from websockets.asyncio.server import serve

from benchmarks.idle_memory import IdleSocket, memory_kib


async def test_sockets_open_say_hello_and_answer_pings() -> None:
    pongs = 0
    hellos: list[str] = []
    all_ponged = asyncio.Event()

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        nonlocal pongs
        async for msg in ws:
            hellos.append(msg)
            await ws.send('{"type":"caught_up","seq":0}')
            await asyncio.wait_for(await ws.ping(), 5)  # resolves when the pong comes
            pongs += 1
            if pongs == 3:
                all_ponged.set()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        socks = []
        for n in range(3):
            _, sock = await loop.create_connection(
                lambda n=n: IdleSocket(f"127.0.0.1:{port}", "/ws/messaging/", f"c{n}", True),
                "127.0.0.1",
                port,
            )
            socks.append(sock)
        agreed = await asyncio.wait_for(asyncio.gather(*(s.ready for s in socks)), 10)
        assert agreed == ["", "", ""]  # offered, refused: no compression
        await asyncio.wait_for(all_ponged.wait(), 10)
        assert len(hellos) == 3
        for s in socks:
            s.close()


def test_memory_is_read_from_proc() -> None:
    rss, pss = memory_kib(os.getpid())
    assert rss > 1000 and 0 < pss <= rss
