"""Real-time events as pydantic models: what building an event and turning it into its
channel-layer form (`realtime.events._wire`: validate, then `model_dump(mode="json")`) costs,
next to the plain dict + JSON round trip it replaced. No network, no database: this is the
CPU a service or consumer spends per event before the channel layer's own send. The old
`send_on_commit` round-tripped its dict through JSON; the old `send_now`/`send_to` sent the
dict as built ("dict only").

    python benchmarks/events_wire.py --rounds 20000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

from benchmarks._common import percentile, table
from realtime.events import SocketClose, _wire
from videochat import events as vc
from voice import events as voice
from voice.schemas import Member

SDP = "v=0\r\n" + "a=candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host\r\n" * 40
MEMBER = {
    "user_id": 7,
    "nickname": "Rubber Duck",
    "description": "10-4",
    "country": "DE",
    "country_name": "Germany",
    "flag": "🇩🇪",
    "is_moderator": False,
    "muted": False,
}

CASES: list[tuple[str, Callable[[], Any], Callable[[], dict[str, Any]]]] = [
    (
        "socket.close",
        lambda: _wire(SocketClose(code=4001)),
        lambda: json.loads(json.dumps({"type": "socket.close", "code": 4001})),
    ),
    (
        "videochat.signal (2.4 KB SDP)",
        lambda: _wire(
            vc.Signal(match_id="m1", from_id=1, kind="offer", data={"type": "offer", "sdp": SDP})
        ),
        lambda: json.loads(
            json.dumps(
                {
                    "type": "videochat.signal",
                    "match_id": "m1",
                    "from_id": 1,
                    "kind": "offer",
                    "data": {"type": "offer", "sdp": SDP},
                }
            )
        ),
    ),
    (
        "voice.member.joined",
        lambda: _wire(voice.MemberJoined(origin="specific.abc!def", member=Member(**MEMBER))),
        lambda: json.loads(
            json.dumps(
                {"type": "voice.member.joined", "origin": "specific.abc!def", "member": MEMBER}
            )
        ),
    ),
]


def timings(fn: Callable[[], Any], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e6)
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20000, help="timed events per row")
    args = parser.parse_args()
    rows = []
    for name, model, loose in CASES:
        for _ in range(200):  # warm up both paths
            model(), loose()
        m, d = timings(model, args.rounds), timings(loose, args.rounds)
        built = loose()  # the dict itself, copied as its builder would make it
        only = timings(lambda: dict(built), args.rounds)  # noqa: B023
        rows.append(
            [
                name,
                percentile(m, 50),
                percentile(m, 99),
                percentile(d, 50),
                percentile(d, 99),
                percentile(only, 50),
            ]
        )
    print(
        table(
            f"event -> channel-layer form, microseconds ({args.rounds} events per row)",
            ["event", "model p50", "model p99", "dict+json p50", "dict+json p99", "dict only p50"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
