"""Admission control: a process works on a bounded number of new sockets at a time.

After a deploy or a crash every client reconnects at once (benchmarks/reconnect_storm.py:
2,500 sockets a process). Let in all together, each socket's session read, Redis writes and
channel join competed with all the others: every one of them finished late, the Redis pools
ran out of connections (the sockets were refused) and a new pooled connection was opened
for nearly every command. Here a socket waits, before its session is even read, for one of
WS_ADMISSION_CONCURRENCY places of its process and keeps it through its connect; its first
request (CBLINE's channel.join) waits for a place again (`place()`). A storm queues; it does
not fail. A socket that is open but idle holds no place (it held one for two seconds after
its accept at first: 10,000 CBLINE sockets that had not joined yet opened at 32 a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings

SCOPE_KEY = "realtime.admission"

_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(max(1, settings.WS_ADMISSION_CONCURRENCY))
    return gate


class Admission:
    """One socket's place during its connect; `release` is idempotent (the consumer's
    connect and the end of the socket may both give it back)."""

    __slots__ = ("_gate",)

    def __init__(self, gate: asyncio.Semaphore) -> None:
        self._gate: asyncio.Semaphore | None = gate

    def release(self) -> None:
        if self._gate is not None:
            self._gate.release()
            self._gate = None


@contextlib.asynccontextmanager
async def place() -> AsyncIterator[None]:
    """A place of this process's gate for a new socket's first request, waited for in line
    with the connects."""
    async with _gate():
        yield


def of(scope: dict[str, Any]) -> Admission | None:
    admission = scope.get(SCOPE_KEY)
    return admission if isinstance(admission, Admission) else None


class AdmissionMiddleware:
    """Outermost on WebSockets, before authentication (which reads the session)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        gate = _gate()
        await gate.acquire()
        admission = Admission(gate)
        # In place: a copy of the scope would be held for the socket's life
        # (benchmarks/idle_memory.py); the middlewares inside copy it anyway.
        scope[SCOPE_KEY] = admission
        try:
            return await self.inner(scope, receive, send)
        finally:
            admission.release()
