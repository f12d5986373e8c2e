"""`make test`: the browser tests and the rest as two pytest runs side by side.

Most of a browser test's time is spent waiting (on Chromium, on real-time audio, on a server
process starting), so the two halves overlap well even on two cores. Each run is isolated as
any two runs are: its own database, Redis key prefix, media folder and server processes (see
config/settings/test.py). The rest streams to the terminal; the browser run's output follows
it. With arguments (`make test PYTEST_ARGS="tests/voice -x"`), one plain pytest run.

    python tests/split_run.py [pytest arguments]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time


def main(argv: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest"]
    if argv and any(not a.startswith("-") for a in argv):
        return subprocess.call([*pytest, *argv])  # a targeted run: no split
    started = time.monotonic()
    with tempfile.TemporaryFile() as browser_log:
        browser = subprocess.Popen(
            [*pytest, "-m", "e2e", *argv], stdout=browser_log, stderr=subprocess.STDOUT
        )
        try:
            rest_rc = subprocess.call([*pytest, "-m", "not e2e", *argv])
            browser_rc = browser.wait()
        except BaseException:
            browser.terminate()
            browser.wait()
            raise
        browser_log.seek(0)
        print("\n=== browser tests (ran alongside the rest) ===", flush=True)
        sys.stdout.buffer.write(browser_log.read())
    minutes = (time.monotonic() - started) / 60
    print(
        f"\n=== rest: exit {rest_rc}; browser tests: exit {browser_rc}; "
        f"wall clock {minutes:.1f} min (load {os.getloadavg()[0]:.1f}) ===",
        flush=True,
    )
    # pytest's 5 ("no tests collected") is a failure here too: a half that ran nothing is wrong.
    return 0 if rest_rc == browser_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
