"""Matrix-style identifiers: `@<user pk>:<server>`, `!room:<server>`, `$event`, `mxc://`."""

from __future__ import annotations

import re
import secrets
import string

from django.conf import settings

_LETTERS = string.ascii_letters


def server_name() -> str:
    return str(settings.MESSAGING_SERVER_NAME)


def mxid(user_id: int) -> str:
    return f"@{user_id}:{server_name()}"


def user_pk(user_mxid: str) -> int | None:
    """The user pk an id of this server names, or None (another server, or not an id)."""
    m = re.fullmatch(r"@(\d{1,18}):(.+)", user_mxid)
    if m is None or m.group(2) != server_name():
        return None
    return int(m.group(1))


def new_room_id() -> str:
    return "!" + "".join(secrets.choice(_LETTERS) for _ in range(18)) + ":" + server_name()


def new_event_id() -> str:
    # 24 characters of [A-Za-z0-9-_] from one read of the system's randomness (a choice
    # per character read it 24 times: 44 us an id, a message's, against 1 us).
    return "$" + secrets.token_urlsafe(18)


def new_media_id() -> str:
    return secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9-_]


def content_uri(media_id: str) -> str:
    return f"mxc://{server_name()}/{media_id}"
