"""`make test`: the browser tests, in shards, and the rest as pytest runs side by side.

Most of a browser test's time is spent waiting (on Chromium, on real-time audio, on a server
process starting), so the runs overlap well even on two cores. Each run is isolated as any two
runs are: its own database, Redis key prefix, media folder and server processes (see
config/settings/test.py). The rest streams to the terminal; the browser shards' output
follows it. With arguments (`make test PYTEST_ARGS="tests/voice -x"`), one plain pytest run.
E2E_SHARDS sets the number of browser shards (2 by default).

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
    shards = max(1, int(os.environ.get("E2E_SHARDS", "2")))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(shards)]
        browsers = [
            subprocess.Popen(
                [*pytest, "-m", "e2e", *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TEST_SHARD": f"{i}/{shards}"},
            )
            for i, log in enumerate(logs)
        ]
        try:
            rest_rc = subprocess.call([*pytest, "-m", "not e2e", *argv])
            browser_rcs = [b.wait() for b in browsers]
        except BaseException:
            for b in browsers:
                b.terminate()
                b.wait()
            raise
        for i, log in enumerate(logs):
            log.seek(0)
            print(f"\n=== browser tests, shard {i + 1} of {shards} (ran alongside the rest) ===")
            sys.stdout.flush()
            sys.stdout.buffer.write(log.read())
    minutes = (time.monotonic() - started) / 60
    print(
        f"\n=== rest: exit {rest_rc}; browser shards: exit {browser_rcs}; "
        f"wall clock {minutes:.1f} min (load {os.getloadavg()[0]:.1f}) ===",
        flush=True,
    )
    # pytest's 5 ("no tests collected") is a failure here too: a run that ran nothing is wrong.
    return 0 if rest_rc == 0 and all(rc == 0 for rc in browser_rcs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
