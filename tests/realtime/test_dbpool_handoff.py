"""realtime.dbpool's hand-off: what a call on the pool threads gets from its caller, and what
the caller gets back (the database side is in test_dbpool.py)."""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import threading
import traceback

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.utils import translation

from realtime.dbpool import pool_call_loop, pooled

REQUEST = contextvars.ContextVar("request", default="none")


def where() -> tuple[asyncio.AbstractEventLoop | None, str]:
    return pool_call_loop(), threading.current_thread().name


async def test_the_call_runs_on_a_pool_thread_and_knows_the_callers_loop() -> None:
    loop, thread = await pooled(where)()
    assert loop is asyncio.get_running_loop()
    assert thread != threading.current_thread().name
    assert pool_call_loop() is None  # only inside a call


def seen() -> tuple[str, str]:
    return REQUEST.get(), translation.get_language()


async def test_the_call_sees_the_callers_contextvars_and_django_locals() -> None:
    REQUEST.set("r-1")
    with translation.override("de"):  # a Local of asgiref's, tagged with its thread
        assert await pooled(seen)() == ("r-1", "de")
    with translation.override("fr"):
        assert (await pooled(seen)())[1] == "fr"


async def loop_of_the_call() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def nested() -> asyncio.AbstractEventLoop:
    return async_to_sync(loop_of_the_call)()


async def test_async_to_sync_in_the_call_runs_on_the_callers_loop() -> None:
    """Not on a new loop in a new thread (the Redis layer's connections are the loop's)."""
    assert await pooled(nested)() is asyncio.get_running_loop()


class Failed(Exception):
    pass


def fail() -> None:
    raise Failed("inside")


async def test_an_exception_comes_back_with_its_traceback() -> None:
    with pytest.raises(Failed, match="inside") as caught:
        await pooled(fail)()
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "fail" in frames


async def test_a_cancelled_caller_leaves_the_pool_working() -> None:
    """Every thread busy with a call whose caller is cancelled meanwhile: the results that
    nobody awaits any more are dropped, and later calls (queued and new) still come back."""
    release = threading.Event()
    started = threading.Semaphore(0)

    def blocked(i: int) -> int:
        started.release()
        release.wait(30)
        return i

    threads = settings.DB_POOL_THREADS
    waiting = [asyncio.ensure_future(pooled(blocked)(i)) for i in range(threads)]
    for _ in range(threads):
        await asyncio.to_thread(started.acquire, True, 30)
    queued = asyncio.ensure_future(pooled(blocked)(-1))
    for task in waiting[::2]:
        task.cancel()
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 30)
    for i, result in enumerate(results):
        if i % 2:
            assert result == i
        else:
            assert isinstance(result, asyncio.CancelledError)
    assert await asyncio.wait_for(queued, 30) == -1
    assert await asyncio.wait_for(pooled(blocked)(7), 30) == 7


async def test_many_results_finishing_together_all_come_back() -> None:
    calls = [pooled(int)(str(i)) for i in range(200)]
    assert await asyncio.wait_for(asyncio.gather(*calls), 30) == list(range(200))


EXIT_SCRIPT = """
import asyncio, threading
import django
django.setup()
from realtime.dbpool import pooled

go = threading.Event()

def call():
    go.wait(30)
    print("call done", flush=True)

async def main():
    task = asyncio.ensure_future(pooled(call)())
    await asyncio.sleep(0)  # submitted; the loop ends (the task cancelled) while it runs
    assert not task.done()

asyncio.run(main())
threading._register_atexit(go.set)  # runs before the pool's own exit hook
"""


def test_the_interpreter_exit_waits_for_the_calls_under_way() -> None:
    """As a ThreadPoolExecutor's threads: a call's commit and its on-commit sends are not
    cut off by the process ending."""
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "call done\n"
