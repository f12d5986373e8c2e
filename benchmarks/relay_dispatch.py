"""CBLINE relay dispatch: the CPU one audio packet costs a process from the moment Redis
hands it over (a pub/sub push read by realtime.fanout) to its write to every local
listener's socket, through voice.relay's checks (transmission known, who may hear it) and
realtime.fanout's raw writes.

In process, no network: the listeners' raw sockets only count what they are given, so this
is the dispatch itself, not send() system calls (benchmarks/ptt_fanout.py measures the whole
path with real sockets and servers). Needs the settings to import (REDIS_URL is not used).

    python benchmarks/relay_dispatch.py --listeners 1,100,1000 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

import django

django.setup()

from benchmarks._common import table  # noqa: E402
from realtime.fanout import _Slot  # noqa: E402
from realtime.rawsocket import Write  # noqa: E402
from voice.relay import Relay, _Tx  # noqa: E402

CHANNEL, TX = 1, 7


class CountingRaw:
    __slots__ = ("frames",)

    def __init__(self) -> None:
        self.frames = 0

    def write(self, frame: bytes) -> Write:
        self.frames += 1
        return Write.SENT


class Listener:
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.channel_name = f"bench.{user_id}"
        self.raw_socket = CountingRaw()

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise AssertionError("every listener here has a raw socket")


async def measure(listeners: int, packets: int, repeats: int) -> tuple[float, float]:
    """Best of `repeats` runs of `packets` pushes: (us per packet, us per delivery)."""
    relay = Relay()
    fanout = relay.fanout
    # As join() would leave it, without a Redis subscription: pushes are fed by hand.
    people = [Listener(100 + i) for i in range(listeners)]
    fanout.listeners[CHANNEL] = {p: _Slot(p, p.raw_socket) for p in people}
    fanout._names[b"bench"] = CHANNEL
    relay._txs[TX] = _Tx(channel_id=CHANNEL, talker_id=1, recipients=None, expires_at=1e18)
    packet = struct.pack(">BBHId", 1, 0, 0, TX, 0.0) + b"x" * 120  # ~40 ms of 24 kb/s Opus
    push = [b"message", b"bench", packet]
    for _ in range(min(packets, 200)):  # warm up
        fanout._on_push(push)
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(packets):
            fanout._on_push(push)
        best = min(best, time.process_time() - started)
    assert all(p.raw_socket.frames == people[0].raw_socket.frames for p in people)
    return best / packets * 1e6, best / packets / listeners * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", default="1,100,1000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for n in (int(x) for x in args.listeners.split(",")):
        per_packet, per_delivery = asyncio.run(measure(n, max(200, 20_000 // n), args.repeats))
        rows.append([n, round(per_packet, 1), round(per_delivery, 2)])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        table(
            f"relay dispatch, CPU per packet (best of {args.repeats}; load {load:.1f})",
            ["listeners", "us/packet", "us/delivery"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
