"""CBLINE fixtures: channels made through the service, and a relay closed with each loop."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async


@pytest.fixture(autouse=True)
async def _close_relay() -> AsyncIterator[None]:
    """Each test's event loop has its own relay: stop its pub/sub reader with the test."""
    yield
    from voice.relay import close_relay

    await close_relay()


@pytest.fixture
def make_channel(transactional_db: None):  # type: ignore[no-untyped-def]
    """`await make_channel(creator, name=..., password=..., range_km=...)`."""

    @sync_to_async
    def make(creator: Any, **kwargs: Any) -> Any:
        from voice.services import channel_create

        kwargs.setdefault("name", f"chan-{time.monotonic_ns()}")
        return channel_create(creator=creator, **kwargs)

    return make
