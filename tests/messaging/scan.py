"""Look everywhere the server keeps anything (every SQL table, every Redis key of this run,
every file under MEDIA_ROOT) for a plaintext: an end-to-end encrypted product must hold none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from realtime.redis import get_redis


def _text(value: Any) -> str:
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def plaintext_found(needles: list[str]) -> list[str]:
    """Where any of `needles` occurs in the clear: ["table app_model", "redis key", "file x"]."""
    hits: list[str] = []
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
        for table in tables:
            # Table names come from the database itself, quoted.
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                blob = " ".join(_text(v) for v in row)
                hits += [f"table {table}" for n in needles if n in blob]
    r = get_redis()
    for key in r.scan_iter(match=settings.REDIS_KEY_PREFIX + "*", count=1000):
        kind = r.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "string":
            data: Any = r.get(key)
        elif kind == "hash":
            data = r.hgetall(key)
        elif kind == "list":
            data = r.lrange(key, 0, -1)
        elif kind == "set":
            data = r.smembers(key)
        elif kind == "zset":
            data = r.zrange(key, 0, -1)
        elif kind == "stream":
            data = r.xrange(key)
        else:
            data = ""
        blob = repr(data)
        hits += [f"redis {key!r}" for n in needles if n in blob or n.encode() in str(data).encode()]
    media = Path(settings.MEDIA_ROOT)
    if media.exists():
        for path in media.rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                hits += [f"file {path}" for n in needles if n.encode() in content]
    return hits
