"""Fixtures every test package shares: Redis key hygiene, users with sessions, live ASGI
server processes (daphne) on the test database, WebSocket communicators."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from asgiref.sync import SyncToAsync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection, connections

from realtime.dbpool import release_connections
from tests.factories import UserFactory
from tests.processes import stop_process
from tests.waiting import until

ROOT = Path(__file__).resolve().parent.parent
E2E_SKIPPED: list[str] = []
# Every log file a server process of this run wrote (tests/e2e/test_logs.py greps them).
SERVER_LOGS: list[Path] = []


@pytest.fixture(autouse=True)
def _redis_clean() -> Iterator[None]:
    """Each test starts and ends with none of this run's keys (other runs are untouched)."""
    from realtime.redis import get_redis

    def wipe() -> None:
        r = get_redis()
        batch = list(r.scan_iter(match=settings.REDIS_KEY_PREFIX + "*", count=1000))
        for i in range(0, len(batch), 500):
            r.delete(*batch[i : i + 500])

    wipe()
    yield
    wipe()


@pytest.fixture(autouse=True)
def _fresh_db_pool() -> Iterator[None]:
    """A new PostgreSQL pool for each test. Tests call the ORM from contexts that never close
    their connection (async ORM calls, sync_to_async in the test itself), which the app's own
    paths always do; a pool counts such a connection as taken until the process ends, so
    without this one test's leftovers starved the next ones."""
    yield
    release_connections()  # the socket calls' threads keep theirs between calls
    if connection.vendor == "postgresql":
        connection.close_pool()


@pytest.fixture(autouse=True)
def _helper_thread_connection_closed() -> Iterator[None]:
    """Tests' own sync_to_async calls run on asgiref's one shared thread, whose database
    connection nothing else closes since sockets' calls moved to realtime.dbpool: left
    open, it kept the test database from being dropped at the end of the run. Set up after
    `_fresh_db_pool`, so torn down before it: the connection goes back to its own pool."""
    yield
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


def session_cookie_for(user, user_agent: str = "") -> str:  # type: ignore[no-untyped-def]
    """A real session row for `user` with the device a login issues; returns the cookie
    value. `login_session` also returns the device."""
    return login_session(user, user_agent)[0]


def login_session(user, user_agent: str = ""):  # type: ignore[no-untyped-def]
    """(session key, Device) as a login makes them: a session row and its issued device."""
    from accounts.selectors import DEVICE_SESSION_KEY
    from accounts.services import device_issue

    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    device = device_issue(user=user, session_key=store.session_key, user_agent=user_agent)
    store[DEVICE_SESSION_KEY] = device.pk
    store.save()
    return store.session_key, device


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement any thread runs (the database thread of sync_to_async included):
    for tests that assert what a path costs the database."""
    from django.db.backends.utils import CursorWrapper

    seen: list[str] = []
    execute = CursorWrapper.execute

    def counting(self: CursorWrapper, sql: str, params: Any = None) -> Any:
        # SQLite (the embedded default) sends its BEGIN as a statement; PostgreSQL does not.
        if not sql.startswith("BEGIN"):
            seen.append(sql)
        return execute(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", counting)
    return seen


@pytest.fixture
def make_user(transactional_db: None) -> Callable[..., object]:
    def make(**kwargs: object) -> object:
        return UserFactory(**kwargs)

    return make


def communicator(  # type: ignore[no-untyped-def]
    path: str, user=None, *, origin: str = "http://127.0.0.1", headers=(), session_key=None
):
    """A WebsocketCommunicator on the real ASGI app (origin check, session and device auth
    and all): a fresh login session of `user`, or the existing `session_key`."""
    from config.asgi import application

    hdrs = [(b"origin", origin.encode()), (b"host", b"127.0.0.1"), *headers]
    if user is not None or session_key is not None:
        key = session_key or session_cookie_for(user)
        hdrs.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={key}".encode()))
    return WebsocketCommunicator(application, path, headers=hdrs)


async def acommunicator(path: str, user=None, **kwargs):  # type: ignore[no-untyped-def]
    """`communicator` from async tests (creating the session is a database write)."""
    from asgiref.sync import sync_to_async

    return await sync_to_async(communicator)(path, user, **kwargs)


async def alogin_session(user, user_agent: str = ""):  # type: ignore[no-untyped-def]
    from asgiref.sync import sync_to_async

    return await sync_to_async(login_session)(user, user_agent)


async def aconnected(path: str, user=None, **kwargs):  # type: ignore[no-untyped-def]
    """A connected, settled socket: connect() returns at accept, and the pong comes only after
    the consumer's connect handler has finished (presence recorded and announced)."""
    comm = await acommunicator(path, user, **kwargs)
    ok, _ = await comm.connect()
    assert ok
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from() == {"type": "pong"}
    return comm


@pytest.fixture
def amake_user(make_user: Callable[..., object]) -> Callable[..., object]:
    """`await amake_user(...)` in async tests."""
    from asgiref.sync import sync_to_async

    return sync_to_async(make_user)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def _server_command(server: str, port: int) -> list[str]:
    if server == "daphne":
        app = "config.asgi:application"
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ws",
        "realtime.wsprotocol:LeanWebSocketProtocol",
        "--ws-per-message-deflate",
        "false",
        "--ws-max-size",
        "65536",
        "--log-level",
        "warning",
        "config.asgi:application",
    ]


def _server_env(extra_env: dict[str, str] | None) -> dict[str, str]:
    # pytest's PYTEST_CURRENT_TEST names the running test: left out, or no spare would match.
    inherited = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    return {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DJANGO_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }


@dataclass
class _Launched:
    """A server process started but not yet known to answer, and the environment it got."""

    server: LiveServer
    kind: str
    env: dict[str, str]


def _launch(env: dict[str, str], kind: str) -> _Launched:
    port = free_port()
    (ROOT / "var").mkdir(exist_ok=True)
    SERVER_LOGS.append(ROOT / "var" / f"server-{port}.log")
    log = open(SERVER_LOGS[-1], "wb")  # noqa: SIM115
    cmd = _server_command(kind, port)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return _Launched(LiveServer(port, proc), kind, env)


def _wait_ready(server: LiveServer) -> LiveServer:
    port, proc = server.port, server.process
    # Generous: four test runs side by side on two slow cores took 30 s to start one.
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                if resp.status < 500:
                    return server
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"ASGI server did not start; see var/server-{port}.log"
                ) from None
            time.sleep(0.1)


def start_asgi_server(
    extra_env: dict[str, str] | None = None, *, server: str = "daphne"
) -> LiveServer:
    """Start one ASGI server process on the current test database and this run's Redis."""
    return _wait_ready(_launch(_server_env(extra_env), server).server)


class _Spares:
    """One server process of each kind started ahead for the next test that asks for one.
    Starting a process (Python importing Django and the whole app) was most of a live test's
    set-up on a slow machine; a spare starts while the previous test runs. A spare is used
    only if a fresh start now would get exactly the same command and environment, and it has
    served nothing before, so each test still gets processes as fresh as before."""

    def __init__(self) -> None:
        self.waiting: dict[str, _Launched] = {}

    def take(self, extra_env: dict[str, str] | None, kind: str) -> LiveServer:
        env = _server_env(extra_env)
        spare = self.waiting.pop(kind, None) if not extra_env else None
        if spare is not None and (spare.env != env or spare.server.process.poll() is not None):
            stop_asgi_server(spare.server)
            spare = None
        launched = spare or _launch(env, kind)
        if not extra_env:
            self.waiting[kind] = _launch(env, kind)  # the next one starts while this runs
        return _wait_ready(launched.server)

    def stop(self) -> None:
        for spare in self.waiting.values():
            stop_asgi_server(spare.server)
        self.waiting.clear()


def stop_asgi_server(server: LiveServer) -> None:
    stop_process(server.process)


@pytest.fixture(scope="session")
def _spare_servers(django_db_setup: None) -> Iterator[_Spares]:
    # Depends on the test database's set-up, so it stops its spares before the database is
    # dropped (a process still connected would keep it from being dropped).
    spares = _Spares()
    yield spares
    spares.stop()


@pytest.fixture
def asgi_servers(
    transactional_db: None, _spare_servers: _Spares
) -> Iterator[Callable[..., LiveServer]]:
    """Factory: `asgi_servers()` starts one more server process; all stop after the test."""
    started: list[LiveServer] = []

    def start(extra_env: dict[str, str] | None = None, *, server: str = "daphne") -> LiveServer:
        s = _spare_servers.take(extra_env, server)
        started.append(s)
        return s

    yield start
    for s in started:
        stop_asgi_server(s)


@pytest.fixture
def live_asgi(asgi_servers: Callable[..., LiveServer]) -> LiveServer:
    return asgi_servers()


@pytest.fixture
def proxied_servers(
    asgi_servers: Callable[..., LiveServer], tmp_path: Path
) -> Iterator[Callable[..., Any]]:
    """Factory: `proxied_servers()` starts nginx (deploy/nginx/comms.conf) in front of two
    uvicorn processes, as in production; the result has `.url` like a LiveServer."""
    from tests.nginx_stack import start_nginx_stack

    started: list[Any] = []

    def start(extra_env: dict[str, str] | None = None) -> Any:
        stack = start_nginx_stack(asgi_servers, tmp_path / f"nginx-{len(started)}", extra_env)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


@pytest.fixture
async def uvicorn_in_loop() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """`await uvicorn_in_loop(app)` serves an ASGI app with uvicorn (websockets-sansio, as in
    production) in the test's own event loop, so the test sees the server's in-process state
    (the voice relay's counters, say); returns the ws:// URL. Stopped after the test."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(app: Any) -> str:
        port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ws="realtime.wsprotocol:LeanWebSocketProtocol",
            ws_per_message_deflate=False,
            ws_max_size=65536,
            lifespan="off",
            log_level="warning",
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.get_running_loop().create_task(server.serve())
        servers.append((server, task))
        await until(lambda: server.started, timeout=30, what="the in-loop server started")
        return f"ws://127.0.0.1:{port}/"

    yield start
    for server, task in servers:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


# --- Browser tests run last: Playwright's sync API keeps an event loop running in the main
# thread for the rest of the session once it starts, and pytest-asyncio cannot run an async
# test while one runs ("Runner.run() cannot be called from a running event loop"), so every
# async test collected after tests/e2e (realtime, videochat, voice) would fail.
# trylast: `-m` has deselected its items by then, so a shard splits what this run selected.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)  # stable
    # TEST_SHARD=i/n (tests/split_run.py): this run keeps every n-th test from the i-th, so
    # a file's slow tests spread over the shards.
    if shard := os.environ.get("TEST_SHARD"):
        index, count = (int(part) for part in shard.split("/"))
        config.hook.pytest_deselected(
            items=[item for k, item in enumerate(items) if k % count != index]
        )
        items[:] = [item for k, item in enumerate(items) if k % count == index]
    # A socket opened in an async test starts its loop's liveness beat: stop it with the loop.
    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "obj", None)):
            item.fixturenames.append("_stop_liveness")  # type: ignore[attr-defined]


@pytest.fixture
async def _stop_liveness() -> AsyncIterator[None]:
    yield
    from channels.layers import channel_layers

    from realtime import liveness

    await liveness.stop()
    # A receive still pending when the loop ends leaves channels_redis's receive lock bound to
    # this loop, and the next test's first receive would reuse it ("bound to a different event
    # loop"): the next test gets a layer of its own. (A server process has one loop.)
    for alias in list(channel_layers.backends):
        layer = channel_layers.backends.pop(alias)
        with contextlib.suppress(Exception):
            await layer.close_pools()


# --- Without REDIS_URL the run uses its own embedded Redis: started here, stopped at the end,
# so that no redis-server outlives `make test`.
def pytest_sessionstart(session: pytest.Session) -> None:
    from config import embedded_redis

    name = embedded_redis.name_of(settings.REDIS_URL)
    if name is not None:
        embedded_redis.ensure_running(name)


def _embedded_redis_stop() -> None:
    from config import embedded_redis

    name = embedded_redis.name_of(settings.REDIS_URL)
    if name is not None:
        embedded_redis.stop(name)


# --- Browser tests must not be skipped silently in CI.
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and ("e2e" in report.keywords or report.nodeid.startswith("tests/e2e")):
        E2E_SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _embedded_redis_stop()
    if E2E_SKIPPED and os.environ.get("REQUIRE_BROWSER_TESTS"):
        print(f"\n{len(E2E_SKIPPED)} browser test(s) skipped but REQUIRE_BROWSER_TESTS is set:")
        for nodeid in E2E_SKIPPED:
            print("  ", nodeid)
        session.exitstatus = 1
