"""Every write of CallsApp's bots. Like communities, and unlike chats, these are plain text
on the server, NOT end-to-end encrypted: the bot (and so its owner) reads what a user writes
to it. Telegram's model, kept small:

- An owner makes a bot (username ending in "bot"); its token is shown once, only its hash
  is stored, and a new token revokes the old one at once.
- A user finds a bot by its exact username and writes to it; the bot answers only in chats
  a user started (no spam), and not while the user has blocked it.
- Each user message is an update for the bot, fetched with getUpdates (confirmed and
  deleted by a later offset) or posted to its webhook (deleted once delivered); one not
  fetched is deleted after MESSAGING_RETENTION_DAYS. The chat itself stays until the user
  deletes it, or the user or the bot goes."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
import secrets
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from redis.exceptions import RedisError

from accounts.models import User
from realtime import wakeup
from realtime.events import send_on_commit
from realtime.redis import get_redis

from . import bot_webhook, selectors
from .errors import conflict, forbidden, invalid, quota
from .events import BotPush
from .keys import (
    bot_send_rate_key,
    bot_user_rate_key,
    bot_wake_topic,
    bot_webhook_lock_key,
    callsapp_user_group,
)
from .models import Bot, BotChat, BotMessage, BotUpdate
from .ratelimits import rate_checked
from .schemas import BOT_TEXT_MAX_CHARS, BotMessaged, BotMessageJson

Json = dict[str, Any]

USERNAME = re.compile(r"[A-Za-z0-9_]{5,32}")


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_token(bot: Bot) -> str:
    """`<bot id>:<secret>`, as Telegram's; the id finds the row, the secret's hash is checked."""
    secret = secrets.token_urlsafe(32)
    bot.token_hash = token_hash(secret)
    return f"{bot.pk}:{secret}"


def _check_username(username: str) -> None:
    if not 5 <= len(username) <= 32:
        raise invalid("a bot's username has 5 to 32 characters")
    if not USERNAME.fullmatch(username):
        raise invalid("a bot's username has only letters, digits and underscores")
    if not username.lower().endswith("bot"):
        raise invalid('a bot\'s username must end in "bot"')


def bot_create(*, owner: User, username: str, name: str, description: str) -> tuple[Bot, str]:
    """The bot and its token (shown once)."""
    username = username.strip()
    _check_username(username)
    taken = invalid(f'the username "{username}" is taken')
    if Bot.objects.filter(username__iexact=username).exists():
        raise taken
    try:
        with transaction.atomic():
            # The owner's row, locked: two creations at once cannot both pass the limit.
            User.objects.select_for_update().filter(pk=owner.pk).first()
            limit = settings.MESSAGING_BOTS_PER_USER
            if Bot.objects.filter(owner=owner).count() >= limit:
                raise quota(f"you have {limit} bots, the most one may have")
            bot = Bot.objects.create(
                owner=owner, username=username, name=name.strip(), description=description.strip()
            )
            token = _new_token(bot)
            bot.save(update_fields=["token_hash"])
    except IntegrityError:  # the same username, created at the same moment
        raise taken from None
    return bot, token


def bot_edit(*, owner: User, bot_id: int, name: str, description: str) -> Bot:
    bot = selectors.bot_of_owner(owner_id=owner.pk, bot_id=bot_id)
    bot.name = name.strip()
    bot.description = description.strip()
    bot.save(update_fields=["name", "description"])
    return bot


def bot_token_regenerate(*, owner: User, bot_id: int) -> str:
    """A new token; the old one is refused from now on."""
    with transaction.atomic():
        bot = selectors.bot_of_owner(owner_id=owner.pk, bot_id=bot_id)
        token = _new_token(bot)
        bot.save(update_fields=["token_hash"])
    return token


def bot_delete(*, owner: User, bot_id: int) -> None:
    """The bot, its chats (for their users too) and its pending updates."""
    selectors.bot_of_owner(owner_id=owner.pk, bot_id=bot_id).delete()


# --- a user's side of a chat


def _push(chat: BotChat, bot: Bot, message: BotMessage) -> None:
    data = BotMessageJson(**selectors.bot_message_json(message))
    frame = BotMessaged(bot=bot.username, message=data)
    send_on_commit(callsapp_user_group(chat.user_id), BotPush(frame=frame.model_dump(mode="json")))


def _text_checked(text: str) -> str:
    if not text.strip():
        raise invalid("Bad Request: message text is empty")
    if len(text) > BOT_TEXT_MAX_CHARS:
        raise invalid(f"Bad Request: message is too long (at most {BOT_TEXT_MAX_CHARS})")
    return text


def user_message_send(*, user: User, username: str, text: str) -> Json:
    """The user writes to a bot (starting the chat if new): an update for the bot."""
    text = _text_checked(text)
    rate_checked(
        bot_user_rate_key(user.pk),
        capacity=settings.MESSAGING_BOT_SEND_CAPACITY,
        per_second=settings.MESSAGING_BOT_SEND_PER_SECOND,
        detail="too many messages, slow down",
    )
    with transaction.atomic():
        found = selectors.bot_by_username(username)
        # The bot's row, locked until commit: its updates commit in update_id order.
        bot = Bot.objects.select_for_update().get(pk=found.pk)
        chat, _ = BotChat.objects.get_or_create(bot=bot, user=user)
        if chat.blocked:
            raise forbidden(f"you stopped {bot.username}: restart it to write to it")
        message = BotMessage.objects.create(chat=chat, from_bot=False, text=text)
        BotChat.objects.filter(pk=chat.pk).update(last_at=message.created_at)
        bot.last_update_id += 1  # under the row's lock
        bot.save(update_fields=["last_update_id"])
        BotUpdate.objects.create(bot=bot, update_id=bot.last_update_id, message=message)
        _push(chat, bot, message)  # to the user's other pages
        topic = bot_wake_topic(bot.pk)
        transaction.on_commit(lambda: wakeup.signal(topic))
        if bot.webhook_url:
            bot_webhook.schedule_on_commit(bot.pk)
    return selectors.bot_message_json(message)


def bot_chat_block_set(*, user: User, username: str, blocked: bool) -> Json:
    """Stop a bot (it can no longer write to the user), or restart it."""
    bot = selectors.bot_by_username(username)
    if blocked:  # blocking one never written to keeps it so (the chat holds the choice)
        BotChat.objects.update_or_create(bot=bot, user=user, defaults={"blocked": True})
    else:
        BotChat.objects.filter(bot=bot, user=user).update(blocked=False)
    return selectors.bot_chat_view(bot, user.pk)


def bot_chat_delete(*, user: User, username: str) -> None:
    """The chat goes for the user and for the bot, with its updates not yet fetched; the
    bot cannot write to them again until they write first."""
    bot = selectors.bot_by_username(username)
    BotChat.objects.filter(bot=bot, user=user).delete()


# --- the bot's side (the Bot API)


def bot_message_send(*, bot: Bot, chat_id: int, text: str) -> Json:
    """sendMessage: only in a chat the user started, not while they block the bot."""
    text = _text_checked(text)
    rate_checked(
        bot_send_rate_key(bot.pk),
        capacity=settings.MESSAGING_BOT_SEND_CAPACITY,
        per_second=settings.MESSAGING_BOT_SEND_PER_SECOND,
        detail="Too Many Requests: retry later",
    )
    with transaction.atomic():
        chat = (
            BotChat.objects.select_for_update()
            .select_related("user")
            .filter(pk=chat_id, bot=bot)
            .first()
        )
        # A chat the user only blocked, never wrote in, is not one they started.
        if chat is None or not chat.messages.filter(from_bot=False).exists():
            raise forbidden("Forbidden: bot can't initiate conversation with a user")
        if chat.blocked:
            raise forbidden("Forbidden: bot was blocked by the user")
        if chat.user.deletion_requested_at is not None or not chat.user.is_active:
            raise forbidden("Forbidden: user is deactivated")
        message = BotMessage.objects.create(chat=chat, from_bot=True, text=text)
        BotChat.objects.filter(pk=chat.pk).update(last_at=message.created_at)
        _push(chat, bot, message)
    return selectors.bot_api_message(message, chat)


def bot_updates_confirm(*, bot: Bot, offset: int | None) -> None:
    """getUpdates' offset: every update below it is confirmed, so deleted. Refused while a
    webhook is set: its deliveries confirm the updates (as Telegram)."""
    if bot.webhook_url:
        raise conflict(
            "Conflict: can't use getUpdates method while webhook is active; "
            "use deleteWebhook to delete the webhook first"
        )
    if offset is not None:
        BotUpdate.objects.filter(bot=bot, update_id__lt=offset).delete()


def bot_webhook_set(*, bot: Bot, url: str, secret_token: str) -> None:
    bot_webhook.url_check(url)
    bot.webhook_url = url
    bot.webhook_secret = secret_token
    bot.save(update_fields=["webhook_url", "webhook_secret"])
    # What waits already goes there now.
    if BotUpdate.objects.filter(bot=bot).exists():
        bot_webhook.schedule_on_commit(bot.pk)


def bot_webhook_delete(*, bot: Bot) -> None:
    bot.webhook_url = ""
    bot.webhook_secret = ""
    bot.save(update_fields=["webhook_url", "webhook_secret"])


def bot_webhook_deliver(*, bot_id: int) -> bool:
    """The bot's pending updates to its webhook, oldest first, each deleted once its server
    took it. True: nothing left to do (or no webhook); False: try again later (one failed,
    the rest wait behind it in order; or another worker is delivering, and may have read the
    queue before this update was in it)."""
    lock = get_redis().lock(bot_webhook_lock_key(bot_id), timeout=120, blocking=False)
    if not lock.acquire():
        return False
    try:
        while True:
            bot = Bot.objects.filter(pk=bot_id).first()
            if bot is None or not bot.webhook_url:
                return True
            pending = list(
                BotUpdate.objects.filter(bot=bot)
                .select_related("message__chat__user__profile")
                .order_by("update_id")[:50]
            )
            if not pending:
                return True
            for u in pending:
                update = selectors.bot_update_json(u)
                if not bot_webhook.post_update(bot.webhook_url, bot.webhook_secret, update):
                    return False
                BotUpdate.objects.filter(pk=u.pk).delete()
    finally:
        with contextlib.suppress(RedisError):
            lock.release()


def bot_updates_purge(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Beat: updates no bot fetched within MESSAGING_RETENTION_DAYS are deleted (the chat's
    history stays, the user's to delete)."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.MESSAGING_RETENTION_DAYS)
    deleted = 0
    while True:  # in batches: one statement never holds a huge lock
        old = BotUpdate.objects.filter(created_at__lt=cutoff)
        batch = list(old.values_list("pk", flat=True)[:1000])
        if not batch:
            return {"deleted": deleted}
        deleted += BotUpdate.objects.filter(pk__in=batch).delete()[0]


def user_bots_delete(*, user_id: int) -> None:
    """Account deletion: the bots they own (with every chat and update of them) and their
    chats with others' bots (with those bots' pending updates of them)."""
    Bot.objects.filter(owner_id=user_id).delete()
    BotChat.objects.filter(user_id=user_id).delete()


def poll_waiting(bot_id: int) -> bool:
    """Tests: a getUpdates of this bot is waiting in this process."""
    return wakeup.waiting(bot_wake_topic(bot_id))
