"""Every write of CallsApp. Each is one transaction that validates first; what must reach a
device goes onto that device's durable stream (realtime.stream), never only a group send.

Field names and shapes are the Matrix client-server spec's (docs/protocols/callsapp.md)."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import Subquery, Sum
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Device, Profile, User
from realtime.errors import ServiceError
from realtime.events import send_on_commit
from realtime.keys import stream_group
from realtime.models import IdempotencyKey, StreamItem
from realtime.services import presence_revoked
from realtime.stream import (
    NewItem,
    prepared_cursor,
    stream_answer,
    stream_append,
    stream_append_ctes,
    stream_claim_many,
    stream_delete,
    stream_drop_devices,
    stream_nudge,
    stream_once,
    stream_purge,
    stream_unclaim,
)

from . import selectors
from .errors import (
    forbidden,
    invalid,
    invalid_signature,
    not_found,
    quota,
    too_large,
)
from .events import KeyCountsChanged
from .ids import content_uri, mxid, new_event_id, new_media_id, new_room_id, user_pk
from .keys import claim_rate_key
from .models import (
    Block,
    CrossSigningKey,
    DeviceKeys,
    FallbackKey,
    MediaBlob,
    MediaFetch,
    Membership,
    OneTimeKey,
    Room,
    RoomEvent,
)
from .ratelimits import rate_checked
from .schemas import DeviceKeysBody, SigningKeysUpload
from .selectors import EVENT_KIND, OTK_ALGORITHM, SYNC_KIND
from .signing import (
    cross_signing_public_key,
    same_signed_content,
    signature_valid,
    signatures_of,
)

Json = dict[str, Any]


def _size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")).encode())


def _sync_items(targets: Iterable[tuple[int, int]], sync: Json) -> list[NewItem]:
    frame = selectors.sync_frame(sync)
    return [
        NewItem(user_id=u, device_pk=d, kind=SYNC_KIND, body=sync, frame=frame) for u, d in targets
    ]


def _device_lists_changed(user_ids: Iterable[int], *, about: int) -> None:
    """Tell every keyed device of `user_ids` that `about`'s devices changed."""
    stream_append(
        items=_sync_items(
            selectors.key_devices_of(user_ids), {"device_lists": {"changed": [mxid(about)]}}
        )
    )


# --- keys --------------------------------------------------------------------------------
def keys_upload(
    *,
    device: Device,
    device_keys: DeviceKeysBody | None,
    one_time_keys: dict[str, Any] | None,
    fallback_keys: dict[str, Any] | None,
) -> Json:
    """keys/upload: the device's identity keys (once), one-time keys, its fallback key. Every
    object must carry the device's valid Ed25519 signature (M_INVALID_SIGNATURE otherwise);
    a refused upload stores nothing."""
    user_id = device.user_id
    if one_time_keys and len(one_time_keys) > settings.MESSAGING_MAX_ONE_TIME_KEYS:
        raise invalid(f"at most {settings.MESSAGING_MAX_ONE_TIME_KEYS} one-time keys per upload")
    otks = _split_key_ids(one_time_keys or {})
    fallbacks = _split_key_ids(fallback_keys or {})
    with transaction.atomic():
        announced = False
        if device_keys is not None:
            announced = _device_keys_store(device, device_keys)
        if otks or fallbacks:
            _check_signed_keys(device, otks + fallbacks)
        new = [
            OneTimeKey(device=device, algorithm=alg, key_id=kid, key=key) for alg, kid, key in otks
        ]
        OneTimeKey.objects.bulk_create(new, ignore_conflicts=True)
        for alg in {alg for alg, _, _ in otks}:
            _one_time_keys_prune(device, alg)
        for alg, kid, key in fallbacks:
            FallbackKey.objects.update_or_create(
                device=device, algorithm=alg, defaults={"key_id": kid, "key": key, "used": False}
            )
        if announced:
            _device_lists_changed(selectors.contact_ids(user_id), about=user_id)
        counts = selectors.key_counts(device.pk)["device_one_time_keys_count"]
    return {"one_time_key_counts": counts}


# The SDK keeps 50 one-time keys on the server; a client that uploaded more (one that took
# a missing count for 0 uploaded a batch at every sync frame) keeps its newest only.
ONE_TIME_KEYS_KEPT = 100


def _one_time_keys_prune(device: Device, alg: str) -> None:
    """Claims hand out the oldest key first, and the oldest are those whose private halves
    the client may have dropped (a session made with one could never be opened): the keys
    beyond the newest ONE_TIME_KEYS_KEPT go (one statement)."""
    keys = OneTimeKey.objects.filter(device=device, algorithm=alg)
    oldest_kept = keys.order_by("-id").values("id")[ONE_TIME_KEYS_KEPT - 1 : ONE_TIME_KEYS_KEPT]
    keys.filter(id__lt=Subquery(oldest_kept)).delete()


def _split_key_ids(keys: dict[str, Any]) -> list[tuple[str, str, Any]]:
    out = []
    for full_id, key in keys.items():
        alg, _, kid = full_id.partition(":")
        if not alg or not kid or len(alg) > 64 or len(kid) > 128:
            raise invalid(f"key id {full_id!r} is not <algorithm>:<key id>")
        if _size(key) > 4096:
            raise too_large(f"key {full_id!r} is too large")
        out.append((alg, kid, key))
    return out


def _check_signed_keys(device: Device, keys: list[tuple[str, str, Any]]) -> None:
    """One-time and fallback keys are `signed_curve25519` objects signed by the device's
    ed25519 key (the one it uploaded, in this request or before)."""
    ed = DeviceKeys.objects.filter(device=device).values_list("ed25519", flat=True).first()
    if ed is None:
        raise invalid("upload device_keys first: one-time keys are checked against them")
    signer, key_id = mxid(device.user_id), f"ed25519:{device.device_id}"
    for alg, kid, key in keys:
        if alg != OTK_ALGORITHM:
            raise invalid(f"unknown one-time key algorithm {alg!r} (use {OTK_ALGORITHM})")
        if not isinstance(key, dict) or not isinstance(key.get("key"), str):
            raise invalid(f"{alg}:{kid} must be an object with a key")
        if not signature_valid(key, signer=signer, key_id=key_id, public_key=ed):
            raise invalid_signature(f"{alg}:{kid} is not signed by this device's ed25519 key")


def _device_keys_store(device: Device, body: DeviceKeysBody) -> bool:
    """Store the device's identity keys; True when they are new (announce them)."""
    if body.user_id != mxid(device.user_id) or body.device_id != device.device_id:
        raise invalid("device_keys must name your own user_id and device_id")
    curve = body.keys.get(f"curve25519:{device.device_id}")
    ed = body.keys.get(f"ed25519:{device.device_id}")
    if not curve or not ed:
        raise invalid("device_keys needs curve25519 and ed25519 keys for this device")
    data = body.model_dump()
    if not signature_valid(
        data, signer=body.user_id, key_id=f"ed25519:{device.device_id}", public_key=ed
    ):
        raise invalid_signature("device_keys must be signed by the device's own ed25519 key")
    existing = DeviceKeys.objects.filter(device=device).first()
    if existing is not None:
        if (existing.curve25519, existing.ed25519) != (curve, ed):
            raise invalid("this device's identity keys are already set; sign in as a new device")
        existing.keys = data
        existing.save(update_fields=["keys"])
        return False
    DeviceKeys.objects.create(
        device=device, user_id=device.user_id, keys=data, curve25519=curve, ed25519=ed
    )
    return True


def keys_claim(*, user: User, wanted: dict[str, dict[str, str]]) -> Json:
    """keys/claim: one one-time key per asked device, each handed out exactly once (locked
    and deleted in this transaction; concurrent claimers skip each other's locked rows),
    then the device's fallback key."""
    pairs = [(m, d, alg) for m, devices in wanted.items() for d, alg in devices.items()]
    if len(pairs) > settings.MESSAGING_MAX_CLAIM_DEVICES:
        raise invalid(f"at most {settings.MESSAGING_MAX_CLAIM_DEVICES} devices per claim")
    if pairs:
        rate_checked(
            claim_rate_key(user.pk),
            capacity=settings.MESSAGING_CLAIM_CAPACITY,
            per_second=settings.MESSAGING_CLAIM_PER_SECOND,
            cost=len(pairs),
            detail="too many key claims, slow down",
            retry_after_ms=2000,
        )
    contacts = selectors.contact_ids(user.pk)
    blockers = selectors.blocker_ids(
        of_user_id=user.pk, among=[pk for m, _, _ in pairs if (pk := user_pk(m)) is not None]
    )
    answer: dict[str, dict[str, Any]] = {}
    failures: dict[str, dict[str, str]] = defaultdict(dict)
    with transaction.atomic():
        for m, device_id, alg in pairs:
            pk = user_pk(m)
            device = (
                Device.objects.filter(user_id=pk, device_id=device_id).first()
                if pk in contacts
                else None
            )
            if device is None:
                failures[m][device_id] = "M_NOT_FOUND"
                continue
            if pk in blockers:
                failures[m][device_id] = "M_FORBIDDEN"
                continue
            key = _claim_one(device, alg)
            if key is not None:
                answer.setdefault(m, {})[device_id] = key
                # Live only: a device away gets its counts on its next hello.
                send_on_commit(stream_group(device.pk), KeyCountsChanged())
    return {"one_time_keys": answer, "failures": dict(failures)}


def _claim_one(device: Device, alg: str) -> dict[str, Any] | None:
    otk = (
        OneTimeKey.objects.select_for_update(skip_locked=True)
        .filter(device=device, algorithm=alg)
        .order_by("id")
        .first()
    )
    if otk is not None:
        otk.delete()
        return {f"{alg}:{otk.key_id}": otk.key}
    fallback = FallbackKey.objects.filter(device=device, algorithm=alg).first()
    if fallback is None:
        return None
    if not fallback.used:
        FallbackKey.objects.filter(pk=fallback.pk).update(used=True)
    return {f"{alg}:{fallback.key_id}": fallback.key}


def signing_keys_upload(*, user: User, body: SigningKeysUpload) -> None:
    """keys/device_signing/upload: the user's cross-signing keys. Each holds one Ed25519 key;
    the self-signing and user-signing keys must be signed by the master key (the one in this
    request, else the stored one); signatures on the master key must be its owner's devices'
    (or its own), and valid."""
    me = mxid(user.pk)
    Usage = CrossSigningKey.Usage
    given = {
        Usage.MASTER: body.master_key,
        Usage.SELF_SIGNING: body.self_signing_key,
        Usage.USER_SIGNING: body.user_signing_key,
    }
    keys: dict[str, Json] = {}
    for usage, key in given.items():
        if key is None:
            continue
        if key.user_id != me or usage.value not in key.usage:
            raise invalid(f"{usage.value} key must be yours and say its usage")
        data = key.model_dump()
        if cross_signing_public_key(data) is None:
            raise invalid(f"{usage.value} key must hold exactly one ed25519 key")
        keys[usage.value] = data
    with transaction.atomic():
        master = keys.get(Usage.MASTER.value)
        if master is None:
            stored = CrossSigningKey.objects.filter(user=user, usage=Usage.MASTER).first()
            master = stored.key if stored else None
        else:
            _check_master_signatures(user, master)
        master_pub = cross_signing_public_key(master) if master else None
        for usage in (Usage.SELF_SIGNING, Usage.USER_SIGNING):
            signed = keys.get(usage.value)
            if signed is None:
                continue
            if master_pub is None or not signature_valid(
                signed, signer=me, key_id=f"ed25519:{master_pub}", public_key=master_pub
            ):
                raise invalid_signature(f"the {usage.value} key must be signed by your master key")
        for usage_value, data in keys.items():
            CrossSigningKey.objects.update_or_create(
                user=user, usage=usage_value, defaults={"key": data}
            )
        if keys:
            _device_lists_changed(selectors.contact_ids(user.pk), about=user.pk)


def _check_master_signatures(user: User, master: Json) -> None:
    me = mxid(user.pk)
    pub = cross_signing_public_key(master) or ""
    signers = {f"ed25519:{pub}": pub, **_device_signers(user.pk)}
    for signer, sigs in (master.get("signatures") or {}).items():
        for key_id in sigs:
            known = signers.get(key_id) if signer == me else None
            if known is None or not signature_valid(
                master, signer=signer, key_id=key_id, public_key=known
            ):
                raise invalid_signature(f"the master key's signature by {key_id} is not valid")


def _device_signers(user_id: int) -> dict[str, str]:
    """A user's devices as signing keys: {"ed25519:<device id>": public key}."""
    return {
        f"ed25519:{device_id}": ed
        for device_id, ed in DeviceKeys.objects.filter(user_id=user_id).values_list(
            "device__device_id", "ed25519"
        )
    }


def signatures_upload(*, user: User, body: dict[str, Any]) -> Json:
    """keys/signatures/upload: add the uploader's signatures to keys the server holds. Each
    signed object must be the stored one (signatures aside), and each new signature valid
    and by a key allowed to sign it (the spec's rules): your self-signing key signs your
    devices, your devices sign your master key, your user-signing key signs a contact's
    master key. Anything else is a failure and stores nothing for that key."""
    failures: dict[str, dict[str, Any]] = defaultdict(dict)
    contacts = selectors.contact_ids(user.pk)
    with transaction.atomic():
        touched: set[int] = set()
        for m, objs in body.items():
            pk = user_pk(m)
            if pk is None or not isinstance(objs, dict):
                failures[m]["*"] = {"errcode": "M_INVALID_PARAM", "error": "bad user"}
                continue
            for key_id, signed in objs.items():
                if not isinstance(signed, dict) or _size(signed) > 16384:
                    failures[m][key_id] = {"errcode": "M_INVALID_PARAM", "error": "bad object"}
                    continue
                if pk != user.pk and pk not in contacts:
                    failures[m][key_id] = {"errcode": "M_NOT_FOUND", "error": "unknown key"}
                    continue
                problem = _add_signatures(pk, key_id, signed, by=user)
                if problem is None:
                    touched.add(pk)
                else:
                    failures[m][key_id] = problem
        for pk in touched:
            # Your signature on a contact's master key is yours to see (keys/query shows it
            # to you only): your own devices re-read that contact, nobody else is told.
            audience = selectors.contact_ids(pk) if pk == user.pk else {user.pk}
            _device_lists_changed(audience, about=pk)
    return {"failures": dict(failures)}


def _add_signatures(owner_pk: int, key_id: str, signed: Json, *, by: User) -> Json | None:
    """Add `by`'s valid new signatures of `signed`; the failure, or None when done."""
    me = mxid(by.pk)
    row = DeviceKeys.objects.filter(user_id=owner_pk, device__device_id=key_id).first()
    target: DeviceKeys | CrossSigningKey | None = row
    if target is None:
        target = next(
            (
                k
                for k in CrossSigningKey.objects.filter(user_id=owner_pk)
                if key_id in k.key.get("keys", {}).values()
            ),
            None,
        )
    if target is None:
        return {"errcode": "M_NOT_FOUND", "error": "unknown key"}
    data = target.keys if isinstance(target, DeviceKeys) else target.key
    if not same_signed_content(data, signed):
        return _bad_signature("the signed object is not the key this server holds")
    new = signatures_of(signed, me)
    if not new:
        return _bad_signature("no signature of yours on it")
    signers = _allowed_signers(target, owner_pk, by)
    old = signatures_of(data, me)
    added: dict[str, str] = {}
    for sig_key_id, sig in new.items():
        if old.get(sig_key_id) == sig:
            continue  # already held (the SDK resends the object's existing signatures)
        pub = signers.get(sig_key_id)
        if pub is None:
            return _bad_signature(f"{sig_key_id} may not sign this key")
        if not signature_valid(signed, signer=me, key_id=sig_key_id, public_key=pub):
            return _bad_signature(f"the signature by {sig_key_id} is not valid")
        added[sig_key_id] = str(sig)
    if added:
        data.setdefault("signatures", {}).setdefault(me, {}).update(added)
        target.save()
    return None


def _bad_signature(text: str) -> Json:
    return {"errcode": "M_INVALID_SIGNATURE", "error": text}


def _allowed_signers(
    target: DeviceKeys | CrossSigningKey, owner_pk: int, by: User
) -> dict[str, str]:
    """Which of `by`'s keys may sign `target`: {"ed25519:<key id>": public key}."""
    Usage = CrossSigningKey.Usage
    if isinstance(target, CrossSigningKey) and target.usage != Usage.MASTER:
        return {}  # self-signing and user-signing keys are signed by the master only
    wanted = Usage.SELF_SIGNING if isinstance(target, DeviceKeys) else Usage.USER_SIGNING
    if owner_pk != by.pk and wanted == Usage.SELF_SIGNING:
        return {}  # another user's devices are trusted through their master key
    if owner_pk == by.pk and isinstance(target, CrossSigningKey):
        return _device_signers(by.pk)
    key = CrossSigningKey.objects.filter(user=by, usage=wanted).first()
    pub = cross_signing_public_key(key.key) if key else None
    return {f"ed25519:{pub}": pub} if pub else {}


# --- to-device ---------------------------------------------------------------------------
def to_device_send(
    *, device: Device, event_type: str, txn_id: str, messages: dict[str, dict[str, Json]]
) -> Json:
    """sendToDevice: each target device's message on its stream. Unknown targets and users
    who blocked the sender are named in `failures`; the others get theirs. Once per txnId."""

    def apply() -> Json:
        return _to_device(device, event_type, messages)

    return stream_once(device_pk=device.pk, key=f"todevice:{event_type}:{txn_id}", apply=apply)


def _to_device(device: Device, event_type: str, messages: dict[str, dict[str, Json]]) -> Json:
    sender = device.user_id
    contacts = selectors.contact_ids(sender)
    wanted = {m: user_pk(m) for m in messages}
    blockers = selectors.blocker_ids(
        of_user_id=sender, among=[pk for pk in wanted.values() if pk is not None]
    )
    items: list[NewItem] = []
    failures: dict[str, dict[str, str]] = defaultdict(dict)
    for m, per_device in messages.items():
        pk = wanted[m]
        devices = (
            {d.device_id: d for d in Device.objects.filter(user_id=pk)} if pk in contacts else {}
        )
        for device_id, content in per_device.items():
            if _size(content) > settings.MESSAGING_MAX_EVENT_BYTES:
                raise too_large(f"to-device content for {m} {device_id} is too large")
            if pk in blockers:
                failures[m][device_id] = "M_FORBIDDEN"
                continue
            targets = list(devices.values()) if device_id == "*" else [devices.get(device_id)]
            if not targets or targets[0] is None:
                failures[m][device_id] = "M_NOT_FOUND"
                continue
            event = {"type": event_type, "sender": mxid(sender), "content": content}
            items += _sync_items(
                [(t.user_id, t.pk) for t in targets if t is not None and t.pk != device.pk],
                {"to_device": {"events": [event]}},
            )
    with transaction.atomic():
        stream_append(items=items)
    return {"failures": dict(failures)} if failures else {}


# --- rooms -------------------------------------------------------------------------------
def _emit(
    room: Room,
    sender_id: int,
    type_: str,
    content: Json,
    *,
    state_key: str | None,
    targets: Sequence[tuple[int, int]],
    device: Device | None = None,
    event_id: str | None = None,
) -> RoomEvent:
    event = RoomEvent(
        room=room,
        event_id=event_id or new_event_id(),
        sender_id=sender_id,
        sender_device=device,
        type=type_,
        state_key=state_key,
        content=content,
    )
    _emit_many([(event, room.room_id, targets)])
    return event


def _emit_many(emits: Sequence[tuple[RoomEvent, str, Sequence[tuple[int, int]]]]) -> None:
    """Store events `(unsaved event, its room's room_id, target devices)` and append each to
    its targets' streams: one INSERT for the events, one append for all their deliveries."""
    _events_insert([event for event, _, _ in emits])
    items: list[NewItem] = []
    for event, room_id, targets in emits:
        # Rendered once per recipient user here, so that a socket up to date sends it unread.
        frames: dict[int, Json] = {}
        for u, _ in targets:
            if u not in frames:
                frames[u] = selectors.sync_frame(selectors.timeline_sync(event, room_id, u))
        items += [
            NewItem(user_id=u, device_pk=d, kind=EVENT_KIND, ref=event.pk, frame=frames[u])
            for u, d in targets
        ]
    stream_append(items=items)


def _events_insert(events: Sequence[RoomEvent]) -> None:
    """INSERT the events in one raw statement (every message is one: the model's save path
    cost more CPU than the statement) and give each its pk."""
    fields = [f for f in RoomEvent._meta.concrete_fields if not f.primary_key]
    values = [
        f.get_db_prep_save(getattr(event, f.attname), connection)
        for event in events
        for f in fields
    ]
    q = connection.ops.quote_name
    row = f"({', '.join(['%s'] * len(fields))})"
    sql = (
        f"INSERT INTO {q(RoomEvent._meta.db_table)} "  # noqa: S608
        f"({', '.join(q(str(f.column)) for f in fields)}) "
        f"VALUES {', '.join([row] * len(events))} RETURNING id, event_id"
    )
    with connection.cursor() as cur:
        cur.execute(sql, values)
        pks = {event_id: int(pk) for pk, event_id in cur.fetchall()}
    for event in events:
        event.pk = pks[event.event_id]
        event._state.adding = False
        event._state.db = connection.alias


def _all_member_devices(room: Room) -> list[tuple[int, int]]:
    return selectors.key_devices_of(selectors.member_ids(room))


def _member_event(room: Room, actor_id: int, user: User, membership: str) -> None:
    """A membership change reaches every member's devices (and the leaver's own)."""
    targets = _all_member_devices(room)
    if membership == "leave":
        targets += selectors.key_devices_of([user.pk])
    content = selectors.member_content(user, membership)
    _emit(room, actor_id, "m.room.member", content, state_key=mxid(user.pk), targets=targets)
    # Track each other's devices from now on (or stop: device_lists.left).
    members = selectors.member_ids(room)
    if membership == "join":
        _device_lists_changed([m for m in members if m != user.pk], about=user.pk)
        stream_append(
            items=_sync_items(
                selectors.key_devices_of([user.pk]),
                {"device_lists": {"changed": [mxid(m) for m in members if m != user.pk]}},
            )
        )
    else:
        still = selectors.contact_ids(user.pk)
        gone = [m for m in members if m not in still]
        # No longer contacts: they stop seeing each other online.
        presence_revoked(user_id=user.pk, others=gone)
        if gone:
            stream_append(
                items=_sync_items(
                    selectors.key_devices_of([user.pk]),
                    {"device_lists": {"left": [mxid(m) for m in gone]}},
                )
            )
            stream_append(
                items=_sync_items(
                    selectors.key_devices_of(gone), {"device_lists": {"left": [mxid(user.pk)]}}
                )
            )


def _invitees(inviter: User, ids: Sequence[str]) -> list[User]:
    users = []
    for m in dict.fromkeys(ids):
        invitee = selectors.user_for_mxid(m)
        if invitee is None:
            raise not_found(f"no user {m}")
        if invitee.pk == inviter.pk:
            continue
        if selectors.blocked_either_way(inviter.pk, invitee.pk):
            raise forbidden(f"{m} cannot be invited by you")
        users.append(invitee)
    return users


def room_create(*, creator: User, name: str, invite: Sequence[str], is_direct: bool) -> Room:
    """createRoom: the invitees become members at once (as WhatsApp or Signal groups); the
    creator is the first admin. A direct room is one per pair: asking again returns it."""
    invitees = _invitees(creator, invite)
    if is_direct and len(invitees) != 1:
        raise invalid("a direct chat has exactly one other person")
    if len(invitees) + 1 > settings.MESSAGING_MAX_GROUP_MEMBERS:
        raise invalid(f"a group has at most {settings.MESSAGING_MAX_GROUP_MEMBERS} members")
    with transaction.atomic():
        if is_direct:
            existing = (
                Room.objects.filter(is_direct=True, memberships__user=creator)
                .filter(memberships__user=invitees[0])
                .first()
            )
            if existing is not None:
                return existing
        room = Room.objects.create(room_id=new_room_id(), name=name, is_direct=is_direct)
        people = [creator, *invitees]
        Membership.objects.bulk_create(
            [
                Membership(room=room, user=u, is_admin=(u == creator and not is_direct))
                for u in people
            ]
        )
        targets = _all_member_devices(room)

        def emit(type_: str, content: Json, state_key: str = "") -> None:
            _emit(room, creator.pk, type_, content, state_key=state_key, targets=targets)

        emit("m.room.create", {"creator": mxid(creator.pk), "is_direct": is_direct})
        emit("m.room.encryption", selectors.encryption_content())
        if name:
            emit("m.room.name", {"name": name})
        for u in people:
            emit(
                "m.room.member",
                selectors.member_content(u),
                mxid(u.pk),
            )
        emit("m.room.power_levels", selectors.power_levels(room.memberships.all()))
        # Each member's devices start tracking the others' devices.
        for u in people:
            others = [mxid(o.pk) for o in people if o.pk != u.pk]
            stream_append(
                items=_sync_items(
                    selectors.key_devices_of([u.pk]), {"device_lists": {"changed": others}}
                )
            )
    return room


def _admin_room(actor: User, room_id: str) -> Room:
    room = selectors.room_of_member(room_id=room_id, user_id=actor.pk)
    if room.is_direct:
        raise forbidden("a direct chat has no members to add or remove")
    if not selectors.is_admin(room, actor.pk):
        raise forbidden("only the group's admins may do that")
    return room


def room_invite(*, actor: User, room_id: str, user_mxid: str) -> None:
    with transaction.atomic():
        room = _admin_room(actor, room_id)
        found = _invitees(actor, [user_mxid])
        if not found or Membership.objects.filter(room=room, user=found[0]).exists():
            return
        invitee = found[0]
        if room.memberships.count() >= settings.MESSAGING_MAX_GROUP_MEMBERS:
            raise forbidden("the group is full")
        Membership.objects.create(room=room, user=invitee)
        _member_event(room, actor.pk, invitee, "join")
        # The newcomer's devices learn the room as it is (the spec's `state` section).
        state = {
            "rooms": {"join": {room.room_id: {"state": {"events": selectors.room_state(room)}}}}
        }
        stream_append(items=_sync_items(selectors.key_devices_of([invitee.pk]), state))


def room_kick(*, actor: User, room_id: str, user_mxid: str) -> None:
    with transaction.atomic():
        room = _admin_room(actor, room_id)
        pk = user_pk(user_mxid) or 0
        m = Membership.objects.filter(room=room, user_id=pk).select_related("user").first()
        if m is None:
            raise not_found(f"{user_mxid} is not a member")
        m.delete()
        _member_event(room, actor.pk, m.user, "leave")


def room_leave(*, user: User, room_id: str) -> None:
    with transaction.atomic():
        room = selectors.room_of_member(room_id=room_id, user_id=user.pk)
        Membership.objects.filter(room=room, user=user).delete()
        _member_event(room, user.pk, user, "leave")
        if not room.memberships.exists():
            room.delete()
        elif not room.is_direct and not room.memberships.filter(is_admin=True).exists():
            # A group is never left without an admin: the longest-standing member becomes one.
            first = room.memberships.order_by("joined_at", "pk").first()
            if first is not None:
                first.is_admin = True
                first.save(update_fields=["is_admin"])


def room_name_set(*, actor: User, room_id: str, name: str) -> str:
    with transaction.atomic():
        room = _admin_room(actor, room_id)
        room.name = name
        room.save(update_fields=["name"])
        event = _emit(
            room,
            actor.pk,
            "m.room.name",
            {"name": name},
            state_key="",
            targets=_all_member_devices(room),
        )
    return event.event_id


def room_admins_set(*, actor: User, room_id: str, users: dict[str, int]) -> str:
    with transaction.atomic():
        room = _admin_room(actor, room_id)
        for m, level in users.items():
            pk = user_pk(m) or 0
            if not Membership.objects.filter(room=room, user_id=pk).update(is_admin=level >= 100):
                raise not_found(f"{m} is not a member")
        if not room.memberships.filter(is_admin=True).exists():
            raise invalid("a group keeps at least one admin")
        members = list(room.memberships.all())
        event = _emit(
            room,
            actor.pk,
            "m.room.power_levels",
            selectors.power_levels(members),
            state_key="",
            targets=_all_member_devices(room),
        )
    return event.event_id


def room_event_send(
    *, device: Device, room_id: str, event_type: str, txn_id: str, content: Json
) -> Json:
    """rooms/{id}/send: store the ciphertext once, with a pending delivery per target device.
    Once per txnId: a resend answers the same event_id and stores nothing."""

    event_id = new_event_id()  # known first, so the key is stored with its answer

    def apply() -> Json:
        event = _room_event(device, room_id, event_type, content, event_id=event_id)
        return {"event_id": event.event_id}

    return stream_once(
        device_pk=device.pk,
        key=f"send:{room_id}:{txn_id}",
        apply=apply,
        answer={"event_id": event_id},
    )


def _check_send(event_type: str, content: Json) -> None:
    """What a send is refused for before any read."""
    if event_type != "m.room.encrypted":
        raise invalid("every room is encrypted: send m.room.encrypted events only")
    if _size(content) > settings.MESSAGING_MAX_EVENT_BYTES:
        raise too_large(f"event content over {settings.MESSAGING_MAX_EVENT_BYTES} bytes")
    if content.get("algorithm") != "m.megolm.v1.aes-sha2" or not isinstance(
        content.get("ciphertext"), str
    ):
        raise invalid("content must be a Megolm ciphertext (algorithm, ciphertext, session_id)")


def _send_targets(device: Device, room_id: str) -> tuple[Room, list[tuple[int, int]]]:
    """One read: the room, its members' keyed devices, who among them blocked the sender."""
    room, blocked, targets = selectors.send_targets(
        room_id=room_id, sender_id=device.user_id, exclude_device_pk=device.pk
    )
    if room.is_direct and blocked:
        raise _checked_refusal(blocked=True)
    return room, targets


def _checked_targets(
    answer: tuple[Room, bool, list[tuple[int, int]]] | None,
) -> tuple[Room, list[tuple[int, int]]]:
    """`_send_targets`'s refusals, on an answer of `selectors.send_targets_many`."""
    if answer is None:
        raise _checked_refusal(blocked=False)
    room, blocked, targets = answer
    if room.is_direct and blocked:
        raise _checked_refusal(blocked=True)
    return room, targets


def _checked_refusal(*, blocked: bool) -> ServiceError:
    if blocked:
        return forbidden("this person does not accept your messages")
    return not_found("no such room, or you are not a member")


def _room_event(
    device: Device, room_id: str, event_type: str, content: Json, *, event_id: str
) -> RoomEvent:
    """Runs inside stream_once's transaction. Cheap checks first, then one read."""
    _check_send(event_type, content)
    room, targets = _send_targets(device, room_id)
    return _emit(
        room,
        device.user_id,
        event_type,
        content,
        state_key=None,
        targets=targets,
        device=device,
        event_id=event_id,
    )


@dataclass(frozen=True)
class SendRequest:
    device: Device
    room_id: str
    txn_id: str
    content: Json
    event_type: str = "m.room.encrypted"


def room_events_send(*, sends: Sequence[SendRequest]) -> list[Json | ServiceError]:
    """Several `room_event_send`s (of a process's sockets) in one transaction, a group
    commit: one claim of every idempotency key, a read of each room, one INSERT of the
    events, one append of their deliveries. Each send is answered or refused as it would be
    alone; a refused one stores nothing, its claim included."""
    replies: list[Json | ServiceError | None] = [None] * len(sends)
    first: dict[tuple[int, str], int] = {}  # a key twice in one batch: the later copies
    for i, send in enumerate(sends):
        once = (send.device.pk, f"send:{send.room_id}:{send.txn_id}")
        if once in first:
            continue
        try:
            _check_send(send.event_type, send.content)
        except ServiceError as exc:
            replies[i] = exc
            continue
        first[once] = i
    if connection.vendor == "postgresql":
        _sends_store_one_statement(sends, first, replies)
    else:
        _sends_store(sends, first, replies)
    for i, send in enumerate(sends):
        if replies[i] is None:
            replies[i] = replies[first[(send.device.pk, f"send:{send.room_id}:{send.txn_id}")]]
    return replies  # type: ignore[return-value]


def _sends_store(
    sends: Sequence[SendRequest],
    first: dict[tuple[int, str], int],
    replies: list[Json | ServiceError | None],
) -> None:
    """`room_events_send`'s writes as a transaction of several statements (SQLite)."""
    event_ids = {i: new_event_id() for i in first.values()}
    with transaction.atomic():
        claimed = stream_claim_many(
            claims=[(pk, key, {"event_id": event_ids[i]}) for (pk, key), i in first.items()]
        )
        emits: list[tuple[RoomEvent, str, Sequence[tuple[int, int]]]] = []
        dropped: list[int] = []
        new = [(once, i) for once, i in first.items() if once in claimed]
        # Every room of the batch in one read.
        found = selectors.send_targets_many(
            [(sends[i].room_id, sends[i].device.user_id, sends[i].device.pk) for _, i in new]
        )
        for (pk, key), i in first.items():
            if (pk, key) not in claimed:  # a resend: the stored answer
                replies[i] = stream_answer(device_pk=pk, key=key)
        for ((pk, key), i), answer in zip(new, found, strict=True):
            try:
                room, targets = _checked_targets(answer)
            except ServiceError as exc:
                replies[i] = exc
                dropped.append(claimed[(pk, key)])
                continue
            event = _unsaved_event(sends[i], event_ids[i])
            event.room = room
            emits.append((event, room.room_id, targets))
            replies[i] = {"event_id": event.event_id}
        stream_unclaim(claim_ids=dropped)
        if emits:
            _emit_many(emits)


def _unsaved_event(
    send: SendRequest, event_id: str, *, created_at: dt.datetime | None = None
) -> RoomEvent:
    return RoomEvent(
        created_at=created_at or timezone.now(),
        event_id=event_id,
        sender_id=send.device.user_id,
        sender_device=send.device,
        type=send.event_type,
        state_key=None,
        content=send.content,
    )


def _sends_store_one_statement(
    sends: Sequence[SendRequest],
    first: dict[tuple[int, str], int],
    replies: list[Json | ServiceError | None],
) -> None:
    """PostgreSQL: `room_events_send`'s writes as ONE statement, in autocommit (a statement
    is atomic by itself): the rooms' read with memberships and blocks, the claims of the
    sends allowed, the events of those claimed, their deliveries and stream heads. As a
    transaction it was 6 round trips (BEGIN, 4 statements, COMMIT), each costing the server
    more CPU than PostgreSQL spent on the statement. A key claimed before (a resend) gets
    its stored answer, read after."""
    order = list(first.items())
    now = timezone.now()
    events = [_unsaved_event(sends[i], new_event_id(), created_at=now) for _, i in order]
    q = connection.ops.quote_name
    keys_t, event_t = q(IdempotencyKey._meta.db_table), q(RoomEvent._meta.db_table)
    sql = (
        # The sends as one JSON document: one parameter to quote, where arrays were quoted
        # element by element in Python (the ciphertexts: 4 % of a server's GIL time).
        "WITH s AS (SELECT * FROM jsonb_to_recordset(%s::jsonb) AS s(i bigint, device bigint, "  # noqa: S608
        "sender bigint, room_id text, key text, event_id text, type text, content jsonb)), "
        f"t AS ({selectors.send_targets_cte('s')}), "
        # Refused: not a member (no rows), or a direct room where the other blocked the sender.
        "v AS (SELECT i, min(room_pk) AS room_pk, bool_and(is_direct) AND bool_or(blocks) "
        "AS refused FROM t GROUP BY i), "
        "ok AS (SELECT s.*, v.room_pk FROM s JOIN v ON v.i = s.i WHERE NOT v.refused), "
        f"c AS (INSERT INTO {keys_t} (device_pk, {q('key')}, result, created_at) "
        "SELECT device, key, jsonb_build_object('event_id', event_id), %s FROM ok ORDER BY i "
        f"ON CONFLICT (device_pk, {q('key')}) DO NOTHING RETURNING device_pk, {q('key')}), "
        f"e AS (INSERT INTO {event_t} (room_id, event_id, sender_id, sender_device_id, type, "
        "state_key, content, created_at, delivered_at) SELECT ok.room_pk, ok.event_id, "
        "ok.sender, ok.device, ok.type, NULL, ok.content, %s, NULL FROM ok "
        f"JOIN c ON c.device_pk = ok.device AND c.{q('key')} = ok.key RETURNING id, event_id), "
        "d AS (SELECT t.device_id AS device_pk, t.user_id, row_number() OVER "
        "(PARTITION BY t.device_id ORDER BY ok.i DESC) - 1 AS back, %s::text AS kind, e.id AS ref, "
        "'{}'::jsonb AS body, %s::timestamptz AS created_at, ok.i FROM ok "
        "JOIN e ON e.event_id = ok.event_id JOIN t ON t.i = ok.i "
        "WHERE t.device_id IS NOT NULL AND NOT t.blocks AND t.device_id <> ok.device), "
        f"{stream_append_ctes('d')} "
        "SELECT s.i, v.refused, e.id IS NOT NULL, d.user_id, d.device_pk, h.last_seq - d.back "
        "FROM s LEFT JOIN v ON v.i = s.i LEFT JOIN e ON e.event_id = s.event_id "
        "LEFT JOIN d ON d.i = s.i LEFT JOIN h ON h.device_pk = d.device_pk "
        "ORDER BY s.i, 6"
    )
    batch = [
        {
            "i": index,
            "device": pk,
            "sender": sends[i].device.user_id,
            "room_id": sends[i].room_id,
            "key": key,
            "event_id": event.event_id,
            "type": event.type,
            "content": event.content,
        }
        for index, (((pk, key), i), event) in enumerate(zip(order, events, strict=True), 1)
    ]
    # Prepared: its text is the same for every batch, and planning it cost 3-4x running it.
    with prepared_cursor() as cur:
        cur.execute(sql, [json.dumps(batch), now, now, EVENT_KIND, now])
        rows = cur.fetchall()
    nudges: dict[int, list[Json]] = defaultdict(list)
    frames: dict[tuple[int, int], Json] = {}  # rendered once per send and recipient user
    for index, refused, stored, user_id, device_pk, seq in rows:
        (pk, key), i = order[index - 1]
        event = events[index - 1]
        if refused is None or refused:
            replies[i] = _refused(pk, key, blocked=bool(refused))
        elif not stored:
            replies[i] = stream_answer(device_pk=pk, key=key)  # a resend
        else:
            replies[i] = {"event_id": event.event_id}
            if device_pk is not None:
                if (index, user_id) not in frames:
                    sync = selectors.timeline_sync(event, sends[i].room_id, user_id)
                    frames[(index, user_id)] = selectors.sync_frame(sync)
                nudges[device_pk].append({**frames[(index, user_id)], "seq": seq})
    for device_pk, pushed in nudges.items():
        pushed.sort(key=lambda f: f["seq"])
        stream_nudge(device_pk=device_pk, frames=pushed)


def _refused(device_pk: int, key: str, *, blocked: bool) -> Json | ServiceError:
    """A refused send's answer: the stored one if its key was claimed before (a resend
    after the sender left the room, say: alone, the claim came first), else the refusal."""
    try:
        return stream_answer(device_pk=device_pk, key=key)
    except IdempotencyKey.DoesNotExist:
        return _checked_refusal(blocked=blocked)


def room_event_redact(
    *,
    device: Device,
    room_id: str,
    event_id: str,
    txn_id: str,
    reason: str | None,
    media: Sequence[str] = (),
) -> Json:
    """Delete for everyone: the sender or an admin. Pending deliveries and the ciphertext go
    at once; every member's devices get the m.room.redaction. `media`: the message's
    attachments (mxc URIs, which only the client can read from the ciphertext); those the
    redacting user uploaded to this room go too, file and all. Anyone else's are left."""

    def apply() -> Json:
        user_id = device.user_id
        room = selectors.room_of_member(room_id=room_id, user_id=user_id)
        target = RoomEvent.objects.filter(room=room, event_id=event_id).first()
        if target is None:
            raise not_found("no such event (or it expired)")
        if target.sender_id != user_id and not selectors.is_admin(room, user_id):
            raise forbidden("only the sender or an admin may delete this for everyone")
        stream_delete(kind=EVENT_KIND, refs=[target.pk])
        target.content = {}
        target.delivered_at = target.delivered_at or timezone.now()
        target.save(update_fields=["content", "delivered_at"])
        _blobs_delete(_own_blobs(media, uploader_id=user_id, room=room))
        content: Json = {"redacts": event_id}
        if reason:
            content["reason"] = reason
        event = _emit(
            room,
            user_id,
            "m.room.redaction",
            content,
            state_key=None,
            targets=[t for t in _all_member_devices(room) if t[1] != device.pk],
            device=device,
        )
        return {"event_id": event.event_id}

    with transaction.atomic():
        return stream_once(device_pk=device.pk, key=f"redact:{room_id}:{txn_id}", apply=apply)


def events_trimmed(refs: list[int], acked: bool) -> None:
    """Trim hook of the stream: an event whose last delivery is gone loses its content; its
    sender's devices get the "delivered" tick when that was by acks."""
    events = _lock_undelivered(refs)
    if not events:
        return
    if acked and connection.vendor == "postgresql":
        _deliver_and_tick(events)
        return
    delivered = _mark_delivered(list(events))
    if not acked:
        return
    ticks: dict[tuple[int, str], list[str]] = defaultdict(list)
    # The senders' devices came with the lock, and every tick goes in one append: an ack of
    # several senders' messages (acks are batched per process) costs what an ack of one does.
    devices: dict[int, list[tuple[int, int]]] = {}
    for pk in delivered:
        sender_id, type_, event_id, room_id, sender_devices = events[pk]
        if type_ == "m.room.encrypted":
            ticks[(sender_id, room_id)].append(event_id)
            devices[sender_id] = [(sender_id, d) for d in sender_devices]
    items: list[NewItem] = []
    for (sender_id, room_id), event_ids in ticks.items():
        items += _sync_items(devices[sender_id], delivered_sync(room_id, event_ids))
    stream_append(items=items)


def delivered_sync(room_id: str, event_ids: list[str]) -> Json:
    """The "delivered" tick of `event_ids` in `room_id`, as its sender's devices get it (the
    one-statement path builds the same in SQL: `_deliver_and_tick`)."""
    tick = {"type": "org.callsapp.delivered", "content": {"event_ids": event_ids}}
    return {"rooms": {"join": {room_id: {"ephemeral": {"events": [tick]}}}}}


def _deliver_and_tick(events: dict[int, tuple[int, str, str, str, list[int]]]) -> None:
    """PostgreSQL, on acks: `_mark_delivered` and the append of the senders' "delivered"
    ticks in one statement, a round trip fewer for every ack of a message. The ticks are
    built from what the UPDATE returns, so an event another device still waits for gets
    none; the statement's snapshot is taken after the lock, as `_mark_delivered`'s."""
    update, params = _mark_delivered_sql(list(events))
    ticked = [
        {"id": pk, "sender": sender_id, "room_id": room_id, "event_id": event_id}
        for pk, (sender_id, type_, event_id, room_id, _) in events.items()
        if type_ == "m.room.encrypted"
    ]
    devices = {(sender_id, d) for sender_id, type_, _, _, ds in events.values() for d in ds}
    body = _TICK_BODY
    sql = (
        f"WITH m AS ({update}), "  # noqa: S608
        "t AS (SELECT x.sender, x.room_id, min(x.id) AS first, "
        "jsonb_agg(x.event_id ORDER BY x.id) AS ids FROM jsonb_to_recordset(%s::jsonb) "
        "AS x(id bigint, sender bigint, room_id text, event_id text) JOIN m ON m.id = x.id "
        "GROUP BY x.sender, x.room_id), "
        "v AS (SELECT d.device_pk, t.sender AS user_id, row_number() OVER (PARTITION BY "
        "d.device_pk ORDER BY t.first DESC) - 1 AS back, %s::text AS kind, NULL::bigint AS ref, "
        f"{body} AS body, %s::timestamptz AS created_at FROM t JOIN jsonb_to_recordset("
        "%s::jsonb) AS d(sender bigint, device_pk bigint) ON d.sender = t.sender), "
        f"{stream_append_ctes('v')} "
        "SELECT v.device_pk, h.last_seq - v.back, v.body FROM v "
        "JOIN h ON h.device_pk = v.device_pk ORDER BY 1, 2"
    )
    params += [
        json.dumps(ticked),
        SYNC_KIND,
        timezone.now(),
        json.dumps([{"sender": u, "device_pk": d} for u, d in sorted(devices)]),
    ]
    with prepared_cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    _tick_nudges(rows)


# The "delivered" tick of a row `t` (room_id, ids: the event ids), as `delivered_sync`.
_TICK_BODY = (
    "jsonb_build_object('rooms', jsonb_build_object('join', jsonb_build_object(t.room_id, "
    "jsonb_build_object('ephemeral', jsonb_build_object('events', jsonb_build_array("
    "jsonb_build_object('type', 'org.callsapp.delivered', 'content', "
    "jsonb_build_object('event_ids', t.ids))))))))"
)


def _tick_nudges(rows: Iterable[tuple[int, int, str]]) -> None:
    """Nudge the ticks appended, rows (device_pk, seq, body) in seq order per device."""
    nudges: dict[int, list[Json]] = defaultdict(list)
    for device_pk, seq, sync in rows:  # Django has psycopg hand jsonb over as text
        nudges[device_pk].append({**selectors.sync_frame(json.loads(sync)), "seq": seq})
    for device_pk, frames in nudges.items():
        stream_nudge(device_pk=device_pk, frames=frames)


def acks_settle(devices: list[int], seqs: list[int], leave: list[str]) -> tuple[int, int]:
    """PostgreSQL, the stream's ack statement (realtime.stream.register_ack_statement): the
    acks of a batch `(devices[i], seqs[i])` as ONE statement in autocommit. It deletes every
    acked item but those of the kinds in `leave`, and those of an event another device's
    item still waits for in its snapshot (that device's ack may be under way: those go the
    general way, whose lock and fresh snapshot settle who is last). An event whose acked
    items were its last visible ones is its last delivery: no other can come (deliveries
    are made with the event) and none can be deleted by anyone else (its item of this
    statement is its own), so it is emptied and its sender's devices get the "delivered"
    tick here, as `events_trimmed` would (the events locked in pk order, as there; one
    emptied already, by a concurrent general way, is skipped). Returns (deleted, left)."""
    q = connection.ops.quote_name
    item_t, event_t = q(StreamItem._meta.db_table), q(RoomEvent._meta.db_table)
    room_t, keys_t = q(Room._meta.db_table), q(DeviceKeys._meta.db_table)
    fields = RoomEvent._meta
    now = timezone.now()
    sql = (
        "WITH a AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[]) AS a(d, s)), "  # noqa: S608
        f"x AS (SELECT t.device_pk, t.seq, t.kind, t.ref FROM {item_t} t "
        "JOIN a ON t.device_pk = a.d AND t.seq <= a.s), "
        f"busy AS (SELECT DISTINCT x.ref FROM x JOIN {item_t} o ON o.kind = x.kind "
        "AND o.ref = x.ref WHERE x.kind = %s AND NOT EXISTS (SELECT 1 FROM a "
        "WHERE a.d = o.device_pk AND o.seq <= a.s)), "
        f"d AS (DELETE FROM {item_t} t USING x WHERE t.device_pk = x.device_pk "
        "AND t.seq = x.seq AND x.kind <> ALL(%s::text[]) AND NOT coalesce(x.kind = %s "
        "AND x.ref IN (SELECT ref FROM busy), false) RETURNING t.kind, t.ref), "
        f"l AS (SELECT e.id FROM {event_t} e WHERE e.id IN (SELECT ref FROM d WHERE "
        "kind = %s) AND e.delivered_at IS NULL ORDER BY e.id FOR UPDATE), "
        f"m AS (UPDATE {event_t} e SET content = %s, delivered_at = %s FROM l "
        "WHERE e.id = l.id AND e.delivered_at IS NULL "
        "RETURNING e.id, e.sender_id, e.type, e.event_id, e.room_id), "
        "t AS (SELECT m.sender_id AS sender, r.room_id, min(m.id) AS first, "
        f"jsonb_agg(m.event_id ORDER BY m.id) AS ids FROM m JOIN {room_t} r "
        "ON r.id = m.room_id WHERE m.type = 'm.room.encrypted' GROUP BY m.sender_id, r.room_id), "
        "v AS (SELECT k.device_id AS device_pk, t.sender AS user_id, row_number() OVER "
        "(PARTITION BY k.device_id ORDER BY t.first DESC) - 1 AS back, %s::text AS kind, "
        f"NULL::bigint AS ref, {_TICK_BODY} AS body, %s::timestamptz AS created_at "
        f"FROM t JOIN {keys_t} k ON k.user_id = t.sender), "
        f"{stream_append_ctes('v')} "
        "SELECT v.device_pk, h.last_seq - v.back, v.body::text FROM v "
        "JOIN h ON h.device_pk = v.device_pk "
        "UNION ALL SELECT -1, (SELECT count(*) FROM d), (SELECT count(*) FROM x)::text "
        "ORDER BY 1, 2"
    )
    params: list[Any] = [
        devices,
        seqs,
        EVENT_KIND,
        leave,
        EVENT_KIND,
        EVENT_KIND,
        fields.get_field("content").get_db_prep_save({}, connection),
        fields.get_field("delivered_at").get_db_prep_save(now, connection),
        SYNC_KIND,
        now,
    ]
    with prepared_cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    _, deleted, seen = rows[0]
    _tick_nudges(rows[1:])
    return int(deleted), int(seen) - int(deleted)


def _lock_undelivered(refs: list[int]) -> dict[int, tuple[int, str, str, str, list[int]]]:
    """Lock the events of `refs` still waiting for a device, in pk order (two acks lock in
    the same order): pk -> (sender id, type, event id, room id, the sender's keyed devices:
    where the "delivered" tick goes). Raw SQL: every ack of a message comes here, and
    building the queryset cost more CPU than the statement."""
    q = connection.ops.quote_name
    event_table, room_table = q(RoomEvent._meta.db_table), q(Room._meta.db_table)
    keys_table = q(DeviceKeys._meta.db_table)
    lock = " FOR UPDATE OF e" if connection.features.has_select_for_update_of else ""
    # The devices as text ("1,5"): an array aggregate SQLite has not.
    devices = (
        "string_agg(k.device_id::text, ',' ORDER BY k.device_id)"
        if connection.vendor == "postgresql"
        else "group_concat(k.device_id, ',')"
    )
    sql = (
        f"SELECT e.id, e.sender_id, e.type, e.event_id, r.room_id, "  # noqa: S608
        f"(SELECT {devices} FROM {keys_table} k WHERE k.user_id = e.sender_id) "
        f"FROM {event_table} e JOIN {room_table} r ON r.id = e.room_id "
        f"WHERE e.id {_in_list(len(refs))} AND e.delivered_at IS NULL ORDER BY e.id{lock}"
    )
    with prepared_cursor() as cur:
        cur.execute(sql, _in_params(refs))
        return {
            int(pk): (int(sender), type_, eid, rid, [int(d) for d in (ds or "").split(",") if d])
            for pk, sender, type_, eid, rid, ds in cur
        }


def _mark_delivered(pks: list[int]) -> list[int]:
    """Empty the events (rows already locked) that no device still waits for; returns their
    pks. One statement, run after the lock: its fresh snapshot counts another device's ack
    that committed while this one waited, so the last of two concurrent acks sees the end."""
    sql, params = _mark_delivered_sql(pks)
    with prepared_cursor() as cur:
        cur.execute(sql, params)
        return sorted(int(row[0]) for row in cur.fetchall())


def _in_list(n: int) -> str:
    """`IN (...)` of `n` parameters; on PostgreSQL one array parameter, so that the text is
    the same for any `n` and prepared once (`prepared_cursor`)."""
    if connection.vendor == "postgresql":
        return "= ANY(%s::bigint[])"
    return f"IN ({', '.join(['%s'] * n)})"


def _in_params(values: list[int]) -> list[Any]:
    return [values] if connection.vendor == "postgresql" else list(values)


def _mark_delivered_sql(pks: list[int]) -> tuple[str, list[Any]]:
    q = connection.ops.quote_name
    event_table, item_table = q(RoomEvent._meta.db_table), q(StreamItem._meta.db_table)
    fields = RoomEvent._meta
    params: list[Any] = [
        fields.get_field("content").get_db_prep_save({}, connection),
        fields.get_field("delivered_at").get_db_prep_save(timezone.now(), connection),
        *_in_params(pks),
        EVENT_KIND,
    ]
    sql = (
        f"UPDATE {event_table} SET content = %s, delivered_at = %s "  # noqa: S608
        f"WHERE id {_in_list(len(pks))} AND NOT EXISTS ("
        f"SELECT 1 FROM {item_table} WHERE {item_table}.kind = %s "
        f"AND {item_table}.ref = {event_table}.id) RETURNING id"
    )
    return sql, params


def receipt_send(*, device: Device, room_id: str, event_id: str) -> None:
    """m.read: forwarded to the sender's devices only if the reader allows read receipts."""
    reader = device.user_id
    room = selectors.room_of_member(room_id=room_id, user_id=reader)
    event = RoomEvent.objects.filter(room=room, event_id=event_id).first()
    if event is None:
        raise not_found("no such event")
    allows = Profile.objects.filter(user_id=reader, send_read_receipts=True).exists()
    if not allows or event.sender_id == reader:
        return
    receipt = {event_id: {"m.read": {mxid(reader): {"ts": int(timezone.now().timestamp() * 1000)}}}}
    sync = {
        "rooms": {
            "join": {
                room_id: {"ephemeral": {"events": [{"type": "m.receipt", "content": receipt}]}}
            }
        }
    }
    with transaction.atomic():
        stream_append(items=_sync_items(selectors.key_devices_of([event.sender_id]), sync))


# --- people ------------------------------------------------------------------------------
def ignored_users_set(*, user: User, ignored: Iterable[str]) -> None:
    """m.ignored_user_list: the full list of users this user blocks."""
    pks = set()
    for m in ignored:
        pk = user_pk(m)
        if pk is None:
            raise invalid(f"{m} is not a user id of this server")
        if pk != user.pk:
            pks.add(pk)
    with transaction.atomic():
        Block.objects.filter(blocker=user).exclude(blocked_id__in=pks).delete()
        existing = set(Block.objects.filter(blocker=user).values_list("blocked_id", flat=True))
        real = set(User.objects.filter(pk__in=pks - existing).values_list("pk", flat=True))
        Block.objects.bulk_create([Block(blocker=user, blocked_id=pk) for pk in real])
        # A block ends presence both ways, including watches already open.
        presence_revoked(user_id=user.pk, others=real)


def privacy_settings_set(
    *, user: User, read_receipts: bool | None, online_status: bool | None
) -> Json:
    """The profile's settings, through accounts' service: its rules (the EEA under-16 lock)
    and what hiding does to live presence are the same from here as from the profile page."""
    try:
        profile = account_services.privacy_settings_set(
            user=user, show_online_status=online_status, send_read_receipts=read_receipts
        )
    except ServiceError as exc:
        if exc.code == "privacy_locked":
            raise forbidden(exc.detail) from exc
        raise
    return selectors.privacy_settings_of(profile)


# --- media -------------------------------------------------------------------------------
def media_upload(*, device: Device, room_id: str, data: bytes) -> str:
    """Store an encrypted attachment for the room's devices to fetch once each."""
    user_id = device.user_id
    room = selectors.room_of_member(room_id=room_id, user_id=user_id)
    if len(data) > settings.MESSAGING_MEDIA_MAX_BYTES:
        raise too_large(f"uploads are limited to {settings.MESSAGING_MEDIA_MAX_BYTES} bytes")
    with transaction.atomic():
        used = MediaBlob.objects.filter(uploader_id=user_id).aggregate(n=Sum("size"))["n"] or 0
        if used + len(data) > settings.MESSAGING_MEDIA_QUOTA_BYTES:
            raise quota("your storage for undelivered attachments is full")
        blob = MediaBlob(media_id=new_media_id(), uploader_id=user_id, room=room, size=len(data))
        blob.file.save(blob.media_id, ContentFile(data), save=False)
        name = str(blob.file.name)
        try:
            blob.save()
            targets = selectors.target_devices(
                room=room, sender_id=user_id, exclude_device_pk=device.pk
            )
            MediaFetch.objects.bulk_create(
                [MediaFetch(blob=blob, device_id=pk) for _, pk in targets]
            )
        except Exception:
            blob.file.storage.delete(name)
            raise
    return content_uri(blob.media_id)


def media_fetch(*, device: Device, server_name: str, media_id: str) -> bytes:
    """The ciphertext, once per target device; the blob goes after the last fetch."""
    with transaction.atomic():
        blob = MediaBlob.objects.select_for_update().filter(media_id=media_id).first()
        if blob is None or server_name != settings.MESSAGING_SERVER_NAME:
            raise not_found("no such media")
        mine = MediaFetch.objects.filter(blob=blob, device=device)
        if not mine.exists():
            raise not_found("no such media")
        with blob.file.open("rb") as fh:
            data = fh.read()
        mine.delete()
        if not MediaFetch.objects.filter(blob=blob).exists():
            _blobs_delete([blob])
    return data


def _own_blobs(uris: Sequence[str], *, uploader_id: int, room: Room) -> list[MediaBlob]:
    """The blobs of `uris` (this server's mxc URIs) that `uploader_id` uploaded to `room`."""
    prefix = content_uri("")
    ids = [uri.removeprefix(prefix) for uri in uris if uri.startswith(prefix)]
    if not ids:
        return []
    return list(
        MediaBlob.objects.select_for_update().filter(
            media_id__in=ids, uploader_id=uploader_id, room=room
        )
    )


def _blobs_delete(blobs: Sequence[MediaBlob]) -> None:
    names = [(b.file.storage, str(b.file.name)) for b in blobs if b.file]
    MediaBlob.objects.filter(pk__in=[b.pk for b in blobs]).delete()

    def remove() -> None:
        for storage, name in names:
            storage.delete(name)

    transaction.on_commit(remove)


# --- retention ---------------------------------------------------------------------------
def undelivered_purge(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Beat: whatever waited longer than the retention period goes (the policy: 2 weeks):
    deliveries and to-device messages, events, and attachments."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=settings.MESSAGING_RETENTION_DAYS)
    counts = stream_purge(older_than=cutoff)
    counts["events"], _ = RoomEvent.objects.filter(created_at__lt=cutoff).delete()
    blobs = list(MediaBlob.objects.filter(created_at__lt=cutoff)[:10000])
    with transaction.atomic():
        _blobs_delete(blobs)
    counts["media"] = len(blobs)
    return counts


def device_removed(*, user_id: int, device_pk: int) -> None:
    """A device is gone (signed out, forgotten): its stream goes, and the user's contacts
    are told to re-read the user's devices, so no new key is shared with it."""
    stream_drop_devices(device_pks=[device_pk])
    _device_lists_changed(selectors.contact_ids(user_id), about=user_id)
