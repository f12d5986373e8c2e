"""`make test`: the browser tests and the rest, each in shards, as pytest runs side by side.

Most of a test's time is spent waiting (on Chromium, on real-time audio, on a server process
starting, on a fault drill's reconnect), so the runs overlap well even on two cores: one run
of the rest took 17 min alone on a slow machine with the cores mostly idle. Each run is
isolated as any two runs are: its own database, Redis key prefix, media folder and server
processes (see config/settings/test.py). The first shard of the rest streams to the terminal;
the other shards' output follows it. With arguments (`make test PYTEST_ARGS="tests/voice
-x"`), one plain pytest run. E2E_SHARDS and REST_SHARDS set the number of shards (2 and 1:
with two shards of the rest, the suite took 13-14 min instead of 17-19 on a slow machine, but
the load of four runs made timing-bound tests fail, a fake microphone's audio among them).

    python tests/split_run.py [pytest arguments]
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time


def main(argv: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest"]
    if argv and any(not a.startswith("-") for a in argv):
        return subprocess.call([*pytest, *argv])  # a targeted run: no split
    runs = [
        (f"rest, shard {i + 1} of {n}", ["-m", "not e2e", "--durations=10"], f"{i}/{n}")
        for n in [max(1, int(os.environ.get("REST_SHARDS", "1")))]
        for i in range(n)
    ] + [
        (f"browser tests, shard {i + 1} of {n}", ["-m", "e2e"], f"{i}/{n}")
        for n in [max(1, int(os.environ.get("E2E_SHARDS", "2")))]
        for i in range(n)
    ]
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        logs = [None] + [stack.enter_context(tempfile.TemporaryFile()) for _ in runs[1:]]
        procs = [
            subprocess.Popen(
                [*pytest, *marks, *argv],
                stdout=log,
                stderr=None if log is None else subprocess.STDOUT,
                env={**os.environ, "TEST_SHARD": shard},
            )
            for (_, marks, shard), log in zip(runs, logs, strict=True)
        ]
        try:
            rcs = [p.wait() for p in procs]
        except BaseException:
            for p in procs:
                p.terminate()
                p.wait()
            raise
        for (name, _, _), log in zip(runs[1:], logs[1:], strict=True):
            assert log is not None
            log.seek(0)
            print(f"\n=== {name} (ran alongside the first) ===")
            sys.stdout.flush()
            sys.stdout.buffer.write(log.read())
    minutes = (time.monotonic() - started) / 60
    exits = ", ".join(f"{name}: {rc}" for (name, _, _), rc in zip(runs, rcs, strict=True))
    print(
        f"\n=== exit codes: {exits}; wall clock {minutes:.1f} min "
        f"(load {os.getloadavg()[0]:.1f}) ===",
        flush=True,
    )
    # pytest's 5 ("no tests collected") is a failure here too: a run that ran nothing is wrong.
    return 0 if all(rc == 0 for rc in rcs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
