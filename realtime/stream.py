"""The durable per-device stream: append in the writer's transaction, nudge after commit,
read after a seq, trim on ack, apply a client operation once per idempotency key.

See docs/protocols/stream.md. Products register how their items look on the wire
(`register_renderer`) and what to do when items are trimmed (`register_trim_hook`) in their
`AppConfig.ready`; realtime never imports them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from .errors import ServiceError
from .events import StreamNudge, send_on_commit
from .keys import stream_group
from .models import IdempotencyKey, StreamHead, StreamItem

Json = dict[str, Any]
# (device_pk, items) -> one wire frame per item, in order, without "seq" (the socket adds it).
Renderer = Callable[[int, Sequence[StreamItem]], list[Json]]
# (refs of the trimmed items of one kind, acked?): acked is False when retention purged them.
TrimHook = Callable[[list[int], bool], None]

# PostgreSQL: (devices, seqs, kinds it must leave) -> (items trimmed, items left). See
# register_ack_statement.
AckStatement = Callable[[list[int], list[int], list[str]], tuple[int, int]]

_renderers: dict[str, Renderer] = {}
_trim_hooks: dict[str, list[TrimHook]] = defaultdict(list)
_ack_statements: dict[str, AckStatement] = {}


def register_renderer(kind: str, renderer: Renderer) -> None:
    _renderers[kind] = renderer


def register_trim_hook(kind: str, hook: TrimHook) -> None:
    if hook not in _trim_hooks[kind]:
        _trim_hooks[kind].append(hook)


def register_ack_statement(kind: str, statement: AckStatement) -> None:
    """On PostgreSQL, `stream_ack_many` first runs `statement(devices, seqs, leave)`: ONE
    statement, in autocommit (atomic by itself), that deletes the acked items (each device's
    items up to its seq) it can settle there, its kind's trim hook's work done in the same
    statement, and every acked item of a kind without a trim hook; it leaves the items of
    the kinds in `leave` (other kinds' hooks) and those of its own it cannot settle alone
    (another device's ack of the same thing may be under way). It returns (items deleted,
    items left); what is left goes the general way (a transaction, the trim hooks). One per
    kind; the kind's trim hook stays registered for that general way."""
    _ack_statements[kind] = statement


@dataclass(frozen=True)
class NewItem:
    user_id: int
    device_pk: int
    kind: str
    body: Json = field(default_factory=dict)
    ref: int | None = None
    # The item's wire frame (without "seq"), exactly as the kind's renderer would read it
    # back, when the writer has it at hand: the nudge then carries it, and a socket that is
    # up to date sends it without reading the stream (see stream_socket.stream_nudge).
    frame: Json | None = None


def _bump_heads(counts: dict[tuple[int, int], int]) -> dict[int, int]:
    """Reserve `n` seqs per device; returns each device's new last_seq. Devices in pk order,
    so two writers to overlapping sets of devices never wait on each other in a cycle."""
    ordered = sorted(counts.items(), key=lambda kv: kv[0][1])
    table = connection.ops.quote_name(StreamHead._meta.db_table)
    rows = ", ".join(["(%s, %s, %s)"] * len(ordered))
    params: list[int] = []
    for (user_id, device_pk), n in ordered:
        params += [device_pk, user_id, n]
    sql = (
        f"INSERT INTO {table} (device_pk, user_id, last_seq) VALUES {rows} "  # noqa: S608
        f"ON CONFLICT (device_pk) DO UPDATE SET last_seq = {table}.last_seq + EXCLUDED.last_seq "
        "RETURNING device_pk, last_seq"
    )
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return {int(pk): int(last) for pk, last in cur.fetchall()}


def stream_append(*, items: Sequence[NewItem]) -> dict[int, list[int]]:
    """Append items to their devices' streams, in the caller's transaction; each device is
    nudged after commit. Returns the seqs given, per device, in the order of `items`."""
    if not items:
        return {}
    counts = Counter((i.user_id, i.device_pk) for i in items)
    # No savepoint of its own: this is part of the caller's write, all or nothing.
    with transaction.atomic(savepoint=False):
        if connection.vendor == "postgresql":
            given = _append_rows(items, counts)
        else:
            given = _append_rows_portable(items, counts)
        frames: dict[int, list[Json] | None] = {}
        for it in items:
            if it.frame is None:
                frames[it.device_pk] = None
            elif frames.setdefault(it.device_pk, []) is not None:
                frames[it.device_pk].append(it.frame)  # type: ignore[union-attr]
        for device_pk, seqs in given.items():
            pushed = frames.get(device_pk)
            stream_nudge(
                device_pk=device_pk,
                frames=[{**f, "seq": q} for f, q in zip(pushed, seqs, strict=True)]
                if pushed
                else [],
            )
    return dict(given)


_ASKED_ONLY = 2**62


class _PreparedCursor(psycopg.Cursor[Any]):
    """Server-side binding, each statement prepared at its first run on its connection."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _PreparedCursor:
        return super().execute(query, params, prepare=True)

    def _send_query_prepared(self, name: bytes, pgq: Any, *, binary: bool | None = None) -> None:
        # Kept as a plain execution keeps it: Django logs the statement from it.
        self._query = pgq
        super()._send_query_prepared(name, pgq, binary=binary)


def prepared_cursor() -> CursorWrapper:
    """`connection.cursor()` for a hot statement of fixed text: on PostgreSQL it is parsed
    and planned once per connection, not at every run (Django binds client-side, so nothing
    is ever prepared: a CallsApp send's one statement spent 0.56-0.66 ms planning against
    0.15-0.19 ms executing). Parameters go typed: the SQL casts what it needs. Wrapped as
    Django wraps its own, so queries are still logged and counted. A connection replaced
    after a fault prepares afresh (psycopg keeps the prepared set per connection)."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns preparing off (None), which psycopg applies to prepare=True too: a
        # threshold never reached prepares what asks only (Django's own cursors never do).
        raw.prepare_threshold = _ASKED_ONLY
    with connection.wrap_database_errors:
        return connection._prepare_cursor(_PreparedCursor(raw))  # type: ignore[attr-defined]


def stream_nudge(*, device_pk: int, frames: list[Json]) -> None:
    """After commit, tell the device's socket it has new items: `frames` (each with its
    seq, all of the device's new items in order) or nothing, and the socket reads. For
    writers that append by a statement of their own (`stream_append_ctes`)."""
    send_on_commit(stream_group(device_pk), StreamNudge(frames=frames), wait=False)


def stream_append_ctes(rows: str) -> str:
    """PostgreSQL: the append as two CTEs of a caller's statement (`h`: the heads bumped,
    `device_pk, last_seq`; `i`: the items inserted), so that a writer's whole transaction
    can be one statement. `rows` names the items: (device_pk, user_id, back, kind, ref, body
    jsonb, created_at), where `back` is how many of the device's items in `rows` come after
    this one; its seq is then the head's new last_seq - back. Heads are bumped in device
    order, so two writers to overlapping devices never wait on each other in a cycle."""
    q = connection.ops.quote_name
    heads, table = q(StreamHead._meta.db_table), q(StreamItem._meta.db_table)
    return (
        f"h AS (INSERT INTO {heads} (device_pk, user_id, last_seq) "  # noqa: S608
        f"SELECT device_pk, min(user_id), count(*) FROM {rows} GROUP BY device_pk "
        f"ORDER BY device_pk ON CONFLICT (device_pk) DO UPDATE "
        f"SET last_seq = {heads}.last_seq + EXCLUDED.last_seq RETURNING device_pk, last_seq), "
        f"i AS (INSERT INTO {table} (device_pk, user_id, seq, kind, ref, body, created_at) "
        "SELECT v.device_pk, v.user_id, h.last_seq - v.back, v.kind, v.ref, v.body, "
        f"v.created_at FROM {rows} v JOIN h ON h.device_pk = v.device_pk)"
    )


def _append_rows(
    items: Sequence[NewItem], counts: Counter[tuple[int, int]]
) -> dict[int, list[int]]:
    """The heads' bump and the items' INSERT in one statement (every message appends twice:
    its delivery, then its tick; a round trip each costs more CPU than the statements). Each
    item comes with its distance back from its device's new last seq."""
    back: dict[int, int] = {pk: n for (_, pk), n in counts.items()}
    distances: list[int] = []
    for it in items:
        back[it.device_pk] -= 1
        distances.append(back[it.device_pk])
    encoder = StreamItem._meta.get_field("body").encoder  # type: ignore[attr-defined]
    # The items as one JSON document: one parameter to quote (arrays were quoted element
    # by element in Python).
    rows = [
        {
            "device_pk": it.device_pk,
            "user_id": it.user_id,
            "back": distance,
            "kind": it.kind,
            "ref": it.ref,
            "body": it.body,
        }
        for it, distance in zip(items, distances, strict=True)
    ]
    sql = (
        "WITH v AS (SELECT *, %s::timestamptz AS created_at FROM jsonb_to_recordset(%s::jsonb) "  # noqa: S608
        "AS v(device_pk bigint, user_id bigint, back bigint, kind text, ref bigint, body jsonb)), "
        f"{stream_append_ctes('v')} SELECT device_pk, last_seq FROM h"
    )
    with prepared_cursor() as cur:
        cur.execute(sql, [timezone.now(), json.dumps(rows, cls=encoder)])
        last = {int(pk): int(seq) for pk, seq in cur.fetchall()}
    given: dict[int, list[int]] = defaultdict(list)
    for it, distance in zip(items, distances, strict=True):
        given[it.device_pk].append(last[it.device_pk] - distance)
    return dict(given)


def _append_rows_portable(
    items: Sequence[NewItem], counts: Counter[tuple[int, int]]
) -> dict[int, list[int]]:
    """`_append_rows` without arrays (SQLite): the heads, then the items."""
    last = _bump_heads(dict(counts))
    next_seq = {pk: last[pk] - n + 1 for (_, pk), n in counts.items()}
    rows: list[list[Any]] = []
    given: dict[int, list[int]] = defaultdict(list)
    body = StreamItem._meta.get_field("body")
    now = StreamItem._meta.get_field("created_at").get_db_prep_save(timezone.now(), connection)
    for it in items:
        seq = next_seq[it.device_pk]
        next_seq[it.device_pk] = seq + 1
        given[it.device_pk].append(seq)
        body_value = body.get_db_prep_save(it.body, connection)
        rows.append([it.device_pk, it.user_id, seq, it.kind, it.ref, body_value, now])
    _insert_items(rows)
    return dict(given)


_INSERT_CHUNK = 1000  # rows per INSERT: 7 parameters each, well under PostgreSQL's 65,535


def _insert_items(rows: Sequence[list[Any]]) -> None:
    """A multi-row INSERT of its own: bulk_create's per-call object and query building cost
    as much CPU as the statement (every message is an append, its tick another)."""
    table = connection.ops.quote_name(StreamItem._meta.db_table)
    columns = "device_pk, user_id, seq, kind, ref, body, created_at"
    with connection.cursor() as cur:
        for start in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[start : start + _INSERT_CHUNK]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            params = [value for row in chunk for value in row]
            cur.execute(f"INSERT INTO {table} ({columns}) VALUES {values}", params)  # noqa: S608


def stream_read(*, device_pk: int, after_seq: int, limit: int) -> list[StreamItem]:
    """The device's items after `after_seq`, oldest first (reads only)."""
    # Every socket's every nudge comes here: a raw query skips building and compiling a
    # queryset (about half this call's CPU), and still yields converted model instances.
    table = connection.ops.quote_name(StreamItem._meta.db_table)
    sql = f"SELECT * FROM {table} WHERE device_pk = %s AND seq > %s ORDER BY seq LIMIT %s"  # noqa: S608
    return list(StreamItem.objects.raw(sql, [device_pk, after_seq, limit]))


def stream_last_seq(*, device_pk: int) -> int:
    head = StreamHead.objects.filter(device_pk=device_pk).values_list("last_seq", flat=True)
    return next(iter(head), 0)


def stream_render(*, device_pk: int, items: Sequence[StreamItem]) -> list[Json]:
    """Wire frames for `items` (each with its "seq"), grouped by kind for the renderers."""
    frames: list[Json] = []
    i = 0
    while i < len(items):
        kind = items[i].kind
        j = i
        while j < len(items) and items[j].kind == kind:
            j += 1
        renderer = _renderers.get(kind)
        chunk = items[i:j]
        rendered = (
            renderer(device_pk, chunk) if renderer else [{"type": kind, **it.body} for it in chunk]
        )
        for item, frame in zip(chunk, rendered, strict=True):
            frames.append({**frame, "seq": item.seq})
        i = j
    return frames


def stream_ack(*, device_pk: int, seq: int, limit: int | None = None) -> int:
    """Delete the device's items up to `seq`. `limit` is the highest seq this client may
    ack (what its socket was sent); by default the device's own last seq. An ack beyond it
    is refused and trims nothing: it is not about this device's stream. Returns the count."""
    ceiling = stream_last_seq(device_pk=device_pk) if limit is None else limit
    if seq > ceiling:
        raise ServiceError("ack_ahead", f"seq {seq} is beyond this device's stream ({ceiling})")
    table = connection.ops.quote_name(StreamItem._meta.db_table)
    with transaction.atomic():
        # One statement deletes and says what it deleted (the trim hooks need the refs).
        with connection.cursor() as cur:
            cur.execute(
                f"DELETE FROM {table} WHERE device_pk = %s AND seq <= %s "  # noqa: S608
                "RETURNING kind, ref",
                [device_pk, seq],
            )
            trimmed = cur.fetchall()
        _after_trim(trimmed, acked=True)
    return len(trimmed)


def stream_ack_many(*, acks: Sequence[tuple[int, int]]) -> int:
    """Several devices' acks `(device_pk, seq)` in one transaction: one DELETE for all, the
    trim hooks once over everything it trimmed (one "delivered" tick per sender and room, not
    per ack). Each seq must be one its socket was sent (the caller checked): no ceiling read
    here. On PostgreSQL the registered ack statement (`register_ack_statement`, when exactly
    one product registered one) goes first, and the transaction only for what it left.
    Returns the count trimmed."""
    upto: dict[int, int] = {}
    for device_pk, seq in acks:
        upto[device_pk] = max(seq, upto.get(device_pk, 0))
    if not upto:
        return 0
    table = connection.ops.quote_name(StreamItem._meta.db_table)
    pairs = sorted(upto.items())
    trimmed_first = 0
    if connection.vendor == "postgresql" and len(_ack_statements) == 1:
        # The common case in one round trip (not BEGIN, DELETE, the hook's statements,
        # COMMIT); only what it leaves takes the general way below.
        [(kind, statement)] = _ack_statements.items()
        leave = [k for k, hooks in _trim_hooks.items() if hooks and k != kind]
        trimmed_first, left = statement([d for d, _ in pairs], [q for _, q in pairs], leave)
        if not left:
            return trimmed_first
    if connection.vendor == "postgresql":
        # The same text for any number of acks, so that it is prepared once (prepared_cursor).
        sql = (
            f"DELETE FROM {table} t USING unnest(%s::bigint[], %s::bigint[]) AS a(d, s) "  # noqa: S608
            "WHERE t.device_pk = a.d AND t.seq <= a.s RETURNING t.kind, t.ref"
        )
        params: list[Any] = [[d for d, _ in pairs], [q for _, q in pairs]]
    else:
        where = " OR ".join(["(device_pk = %s AND seq <= %s)"] * len(pairs))
        sql = f"DELETE FROM {table} WHERE {where} RETURNING kind, ref"  # noqa: S608
        params = [value for pair in pairs for value in pair]
    with transaction.atomic():
        with prepared_cursor() as cur:
            cur.execute(sql, params)
            trimmed = cur.fetchall()
        _after_trim(trimmed, acked=True)
    return trimmed_first + len(trimmed)


def _after_trim(trimmed: Sequence[tuple[str, int | None]], *, acked: bool) -> None:
    """Tell each product which of its refs lost an item (in the trimming transaction)."""
    refs: dict[str, list[int]] = defaultdict(list)
    for kind, ref in trimmed:
        if ref is not None:
            refs[kind].append(ref)
    for kind, kind_refs in refs.items():
        for hook in _trim_hooks.get(kind, []):
            hook(kind_refs, acked)


def stream_delete(*, kind: str, refs: Sequence[int]) -> int:
    """Drop pending items of `kind` about `refs` (a message deleted for everyone)."""
    deleted, _ = StreamItem.objects.filter(kind=kind, ref__in=list(refs)).delete()
    return deleted


def stream_drop_devices(*, device_pks: Sequence[int]) -> None:
    """A device is gone (signed out, forgotten, account deleted): its stream goes too."""
    StreamItem.objects.filter(device_pk__in=device_pks).delete()
    StreamHead.objects.filter(device_pk__in=device_pks).delete()
    IdempotencyKey.objects.filter(device_pk__in=device_pks).delete()


def stream_purge(*, older_than: dt.datetime) -> dict[str, int]:
    """Retention: items never acked and idempotency keys older than `older_than`. Trim hooks
    run as for an ack, so products drop what only those items kept alive."""
    counts = {"items": 0, "keys": 0}
    while True:
        with transaction.atomic():
            batch = list(
                StreamItem.objects.filter(created_at__lt=older_than).values_list(
                    "pk", "kind", "ref"
                )[:1000]
            )
            if not batch:
                break
            StreamItem.objects.filter(pk__in=[pk for pk, _, _ in batch]).delete()
            _after_trim([(kind, ref) for _, kind, ref in batch], acked=False)
            counts["items"] += len(batch)
    counts["keys"], _ = IdempotencyKey.objects.filter(created_at__lt=older_than).delete()
    return counts


def stream_once(
    *, device_pk: int, key: str, apply: Callable[[], Json], answer: Json | None = None
) -> Json:
    """Apply a client operation once per (device, idempotency key). The key is inserted in
    the same transaction as the operation's writes: a failed `apply` stores neither, and a
    concurrent resend waits on the key's unique index, then gets the stored answer. An
    `answer` known before `apply` runs (apply returns it) is stored with the key, in the same
    statement: one round trip fewer."""
    with transaction.atomic():
        claim = _claim(device_pk, key, answer or {})
        if claim is None:
            return IdempotencyKey.objects.get(device_pk=device_pk, key=key).result
        result = apply()
        if answer is None:
            _answer_store(claim, result)
        elif result != answer:
            raise AssertionError(f"{key}: apply answered {result!r}, not {answer!r}")
        return result


def _answer_store(claim: int, result: Json) -> None:
    table = connection.ops.quote_name(IdempotencyKey._meta.db_table)
    value = IdempotencyKey._meta.get_field("result").get_db_prep_save(result, connection)
    with connection.cursor() as cur:
        cur.execute(f"UPDATE {table} SET result = %s WHERE id = %s", [value, claim])  # noqa: S608


def _claim(device_pk: int, key: str, answer: Json) -> int | None:
    """Insert the key in one statement; None if it is there already. A claim of the same key
    in a transaction still open waits on the unique index until that one ends."""
    q = connection.ops.quote_name
    fields = IdempotencyKey._meta
    params = [
        device_pk,
        key,
        fields.get_field("result").get_db_prep_save(answer, connection),
        fields.get_field("created_at").get_db_prep_save(timezone.now(), connection),
    ]
    sql = (
        f"INSERT INTO {q(fields.db_table)} (device_pk, {q('key')}, result, created_at) "  # noqa: S608
        f"VALUES (%s, %s, %s, %s) ON CONFLICT (device_pk, {q('key')}) DO NOTHING RETURNING id"
    )
    with connection.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    return None if row is None else int(row[0])


def stream_claim_many(*, claims: Sequence[tuple[int, str, Json]]) -> dict[tuple[int, str], int]:
    """`stream_once`'s claim for several operations at once (a group commit), in the caller's
    transaction: `(device_pk, key, answer)` each, keys distinct. Returns the claim id of each
    key claimed now; a key missing was claimed before (its answer: `stream_answer`), and
    waited for if that claim's transaction was still open. One statement for all."""
    if not claims:
        return {}
    q = connection.ops.quote_name
    fields = IdempotencyKey._meta
    result, created = fields.get_field("result"), fields.get_field("created_at")
    now = created.get_db_prep_save(timezone.now(), connection)
    params: list[Any] = []
    for device_pk, key, answer in claims:
        params += [device_pk, key, result.get_db_prep_save(answer, connection), now]
    rows = ", ".join(["(%s, %s, %s, %s)"] * len(claims))
    sql = (
        f"INSERT INTO {q(fields.db_table)} (device_pk, {q('key')}, result, created_at) "  # noqa: S608
        f"VALUES {rows} ON CONFLICT (device_pk, {q('key')}) DO NOTHING "
        f"RETURNING id, device_pk, {q('key')}"
    )
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return {(int(device_pk), key): int(pk) for pk, device_pk, key in cur.fetchall()}


def stream_unclaim(*, claim_ids: Sequence[int]) -> None:
    """Drop claims of operations that failed inside a group commit (their writes were never
    made): a resend then applies afresh, as after a failed `stream_once`."""
    if claim_ids:
        IdempotencyKey.objects.filter(pk__in=list(claim_ids)).delete()


def stream_answer(*, device_pk: int, key: str) -> Json:
    return IdempotencyKey.objects.get(device_pk=device_pk, key=key).result
