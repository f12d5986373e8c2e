"""benchmarks/ptt_latency.py pairs each heard click with its cause by the click track's gap
pattern (issue 16 item 3): a delay longer than a gap, or lost clicks, cannot alias."""

from __future__ import annotations

import itertools
import random

from benchmarks.ptt_latency import CLICK_GAPS_MS, match_onsets


def sent_clicks(n: int) -> list[float]:
    gaps = itertools.cycle(CLICK_GAPS_MS)
    out, t = [], 1000.0
    for _ in range(n):
        out.append(t)
        t += next(gaps)
    return out


def test_a_delay_longer_than_a_gap_is_measured_not_aliased() -> None:
    sent = sent_clicks(120)
    rnd = random.Random(3)
    heard = [t + 520 + rnd.uniform(-3, 3) for t in sent]
    latencies, unmatched = match_onsets(sent, heard)
    assert unmatched == 0 and len(latencies) == len(sent)
    assert all(515 <= d <= 525 for d in latencies)


def test_lost_and_stray_clicks_are_reported_unmatched() -> None:
    sent = sent_clicks(120)
    heard = [t + 80 for i, t in enumerate(sent) if i % 10 != 5]
    stray = heard[40] + 150  # a sound no click caused (a concealment burst, say)
    latencies, unmatched = match_onsets(sent, sorted([*heard, stray]))
    assert all(abs(d - 80) < 1 for d in latencies)
    assert unmatched >= 1 and len(latencies) <= len(heard)
