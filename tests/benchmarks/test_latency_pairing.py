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


def test_a_buffer_that_stretches_gaps_never_pairs_a_click_with_its_neighbour() -> None:
    """Seen under --netem: the buffer grew twice in a row, stretching the gaps 525 and 500
    to 558 and 534, which look like their neighbours 550 and 525; the click was paired with
    the one before it on that one matching side: 690 ms reported for a click heard after
    200 ms."""
    sent = sent_clicks(40)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    # Where the track has two gaps each 25 ms shorter than the one before (550, 525, 500).
    j = next(
        i for i in range(len(gaps) - 2) if gaps[i] - gaps[i + 1] == gaps[i + 1] - gaps[i + 2] == 25
    )
    delays = [200.0] * len(sent)
    delays[j + 2] = 233.0
    delays[j + 3] = 267.0
    heard = [t + d for t, d in zip(sent, delays, strict=True)]
    latencies, _ = match_onsets(sent, heard)
    assert latencies and max(latencies) <= 267.0
