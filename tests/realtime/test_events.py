"""realtime.events: every event is a pydantic model from its app's events module; the channel
layer carries its JSON form; each one's "type" names a handler some consumer has."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest
from channels.consumer import AsyncConsumer
from django.apps import apps
from django.db import transaction

from realtime import events
from realtime.events import Event, capture_events, send_now, send_on_commit, send_to

pytestmark = pytest.mark.django_db(transaction=True)

# accounts emits only realtime's events (presence, socket close), through realtime.services.
APPS = ("realtime", "payments", "voice", "videochat", "messaging")


def all_subclasses(cls: type) -> set[type]:
    found: set[type] = set(cls.__subclasses__())
    for sub in list(found):
        found |= all_subclasses(sub)
    return found


def product_events() -> list[type[Event]]:
    for app in APPS:
        importlib.import_module(f"{app}.events")
    # Leaves only: a shared base (videochat's PartnerEvent) has no type of its own.
    found = all_subclasses(Event)
    return [c for c in found if c.__module__.split(".")[0] in APPS and not c.__subclasses__()]


def consumer_handlers() -> set[str]:
    for config in apps.get_app_configs():
        if config.name in APPS:
            importlib.import_module(f"{config.name}.consumers")
    return {
        name
        for cls in all_subclasses(AsyncConsumer)
        for name, _ in inspect.getmembers(cls, inspect.isfunction)
    }


def test_every_app_that_emits_has_an_events_module_of_models():
    found = {c.__module__ for c in product_events()}
    assert found == {f"{app}.events" for app in APPS}


def test_every_event_type_names_a_consumer_handler():
    handlers = consumer_handlers()
    for cls in product_events():
        name = cls.model_fields["type"].default
        assert isinstance(name, str) and "." in name, cls
        assert name.replace(".", "_") in handlers, f"{cls.__name__}: no handler for {name}"


def test_send_on_commit_takes_a_model_not_a_dict():
    with pytest.raises(TypeError):
        send_on_commit("g", {"type": "socket.close", "code": 4001})  # type: ignore[arg-type]


async def test_send_now_and_send_to_take_a_model_not_a_dict():
    loose: Any = {"type": "socket.close", "code": 4001}
    with pytest.raises(TypeError):
        await send_now("g", loose)
    with pytest.raises(TypeError):
        await send_to("c", loose)


def test_the_json_form_is_sent_after_commit_and_never_on_rollback():
    with capture_events() as sent:
        with transaction.atomic():
            send_on_commit("g", events.SocketClose(code=4001))
            assert sent == []
        with pytest.raises(RuntimeError), transaction.atomic():
            send_on_commit("h", events.SocketClose(code=4403))
            raise RuntimeError("rolled back")
    assert sent == [("g", {"type": "socket.close", "code": 4001})]


def test_a_model_refuses_a_wrong_field():
    with pytest.raises(ValueError):
        events.PresenceUpdate(user_id=1, online=True, extra=1)  # type: ignore[call-arg]
