"""/messaging/bot-api/<method>: the HTTP API bots speak (docs/protocols/callsapp.md,
"Bots"), Telegram's Bot API in miniature. The token is in `Authorization: Bearer <token>`
(no cookie, so no CSRF); parameters in a JSON body, a form or the query string; answers
`{"ok": true, "result": ...}` or `{"ok": false, "error_code": <HTTP status>, "description"}`.

Async: getUpdates' long poll waits on a realtime.wakeup subscription, holding no thread, no
database connection and no pooled Redis connection while it waits; served outside the
site's sync middleware for that (config/token_asgi.py). Thin: the services and selectors do
the work, on the process's shared sync thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from pydantic import ValidationError

from realtime import metrics, wakeup
from realtime.errors import ServiceError

from . import bots, selectors
from .errors import unauthorized
from .keys import bot_wake_topic
from .models import Bot
from .schemas import BotApiParams, GetUpdates, SendMessage, SetWebhook

Params = dict[str, Any]
Method = Callable[[Bot, Params], Awaitable[Any]]


def _error(status: int, description: str, **extra: Any) -> JsonResponse:
    body = {"ok": False, "error_code": status, "description": description, **extra}
    return JsonResponse(body, status=status)


def _params(request: HttpRequest) -> Params | None:
    """The query string, then the body's (JSON or form) over it; None: not parseable."""
    params: Params = request.GET.dict()
    if request.method != "POST" or not request.body:
        return params
    if request.content_type == "application/json":
        try:
            body = json.loads(request.body)
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        return {**params, **body}
    return {**params, **request.POST.dict()}


def _valid(schema: type[BotApiParams], params: Params) -> Any:
    try:
        return schema.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "parameters"
        raise ServiceError("bad_request", f"Bad Request: {where}: {first['msg']}") from None


async def get_me(bot: Bot, params: Params) -> Any:
    return {"id": bot.pk, "is_bot": True, "username": bot.username, "first_name": bot.name}


async def get_updates(bot: Bot, params: Params) -> Any:
    p = _valid(GetUpdates, params)
    await sync_to_async(bots.bot_updates_confirm)(bot=bot, offset=p.offset)
    read = sync_to_async(selectors.bot_updates_pending)
    wait = min(p.timeout, settings.MESSAGING_BOT_POLL_MAX_SECONDS)
    if wait <= 0:
        return await read(bot, limit=p.limit)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    # Watching before reading: an update committed after the read wakes us.
    with metrics.BOT_POLLS_WAITING.track_inprogress():
        async with wakeup.watching(bot_wake_topic(bot.pk)) as woken:
            while True:
                updates = await read(bot, limit=p.limit)
                remaining = deadline - loop.time()
                if updates or remaining <= 0:
                    return updates
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), remaining)
                woken.clear()
                # A new token (or a closed account) while it waited: nothing for the old one.
                if not await sync_to_async(selectors.bot_token_current)(bot):
                    raise unauthorized("Unauthorized")


async def send_message(bot: Bot, params: Params) -> Any:
    p = _valid(SendMessage, params)
    return await sync_to_async(bots.bot_message_send)(bot=bot, chat_id=p.chat_id, text=p.text)


async def set_webhook(bot: Bot, params: Params) -> Any:
    p = _valid(SetWebhook, params)
    if not p.url:  # as Telegram: an empty URL removes the webhook
        await sync_to_async(bots.bot_webhook_delete)(bot=bot)
    else:
        await sync_to_async(bots.bot_webhook_set)(bot=bot, url=p.url, secret_token=p.secret_token)
    return True


async def delete_webhook(bot: Bot, params: Params) -> Any:
    await sync_to_async(bots.bot_webhook_delete)(bot=bot)
    return True


async def get_webhook_info(bot: Bot, params: Params) -> Any:
    pending = await sync_to_async(selectors.bot_updates_pending_count)(bot)
    return {"url": bot.webhook_url, "pending_update_count": pending}


METHODS: dict[str, Method] = {
    "getMe": get_me,
    "getUpdates": get_updates,
    "sendMessage": send_message,
    "setWebhook": set_webhook,
    "deleteWebhook": delete_webhook,
    "getWebhookInfo": get_webhook_info,
}


@csrf_exempt
async def dispatch(request: HttpRequest, method: str) -> HttpResponse:
    if request.method not in ("GET", "POST"):
        return _error(405, "Method Not Allowed: use GET or POST")
    handler = METHODS.get(method)
    if handler is None:
        return _error(404, "Not Found: no such method")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error(401, "Unauthorized: send the token as Authorization: Bearer <token>")
    if len(request.body) > settings.MESSAGING_MAX_REQUEST_BYTES:
        return _error(413, "Request Entity Too Large")
    params = _params(request)
    if params is None:
        return _error(400, "Bad Request: the body is not a JSON object")
    try:
        bot = await sync_to_async(selectors.bot_by_token)(token.strip())
        result = await handler(bot, params)
    except ServiceError as exc:
        extra = {}
        retry_ms = getattr(exc, "retry_after_ms", None)
        if retry_ms is not None:
            extra["parameters"] = {"retry_after": max(1, math.ceil(retry_ms / 1000))}
        return _error(exc.status, exc.detail, **extra)
    return JsonResponse({"ok": True, "result": result})
