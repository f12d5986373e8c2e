"""keys/upload, keys/claim, keys/query: one-time keys handed out exactly once under
concurrency, then the fallback key; claim floods and blocks refused."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from messaging import selectors
from messaging.models import FallbackKey, OneTimeKey
from messaging.schemas import DeviceKeysBody, SigningKeysUpload
from messaging.services import (
    ignored_users_set,
    keys_claim,
    keys_upload,
    room_create,
    signatures_upload,
    signing_keys_upload,
)
from realtime.errors import ServiceError
from tests.messaging.conftest import member

pytestmark = pytest.mark.django_db(transaction=True)


def claim(claimer: Any, target: Any) -> dict[str, Any]:
    answer = keys_claim(
        user=claimer.user,
        wanted={target.mxid: {target.device.device_id: "signed_curve25519"}},
    )
    return answer["one_time_keys"].get(target.mxid, {}).get(target.device.device_id, {})


def group_of(*people: Any) -> None:
    room_create(
        creator=people[0].user, name="g", invite=[p.mxid for p in people[1:]], is_direct=False
    )


def run_in_threads(n: int, target: Any) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_upload_reports_counts_and_a_claimed_key_is_a_real_one():
    alice, bob = member(otks=0), member(otks=3)
    group_of(alice, bob)
    assert selectors.key_counts(bob.device.pk) == {
        "device_one_time_keys_count": {"signed_curve25519": 3},
        "device_unused_fallback_key_types": ["signed_curve25519"],
    }
    ((key_id, key),) = claim(alice, bob).items()
    assert key_id.startswith("signed_curve25519:")
    # A real Olm session can be built from it, and Bob can open it.
    message = alice.olm.olm_encrypt(bob.olm.curve25519, key["key"], {"hello": "bob"})
    assert bob.olm.olm_decrypt(message) == {"hello": "bob"}
    assert selectors.key_counts(bob.device.pk)["device_one_time_keys_count"] == {
        "signed_curve25519": 2
    }


def test_concurrent_claims_hand_each_one_time_key_out_once_then_the_fallback():
    bob = member(otks=12)
    claimers = [member(otks=0) for _ in range(16)]
    group_of(bob, *claimers)
    published = set(OneTimeKey.objects.filter(device=bob.device).values_list("key_id", flat=True))
    fallback_id = FallbackKey.objects.get(device=bob.device).key_id

    got = run_in_threads(16, lambda i: claim(claimers[i], bob))

    keys = [next(iter(k.items())) for k in got]
    one_time = [kid.split(":", 1)[1] for kid, key in keys if not key.get("fallback")]
    assert len(one_time) == len(set(one_time)) == 12  # each key once, none lost
    assert set(one_time) == published
    fallbacks = [kid.split(":", 1)[1] for kid, key in keys if key.get("fallback")]
    assert fallbacks == [fallback_id] * 4  # then the fallback, to everyone after
    assert not OneTimeKey.objects.filter(device=bob.device).exists()


def test_the_fallback_key_is_used_once_the_pool_is_empty_and_reported_used():
    alice, bob = member(otks=0), member(otks=1)
    group_of(alice, bob)
    first = claim(alice, bob)
    assert "fallback" not in next(iter(first.values()))
    assert selectors.key_counts(bob.device.pk)["device_unused_fallback_key_types"] == [
        "signed_curve25519"
    ]
    second = claim(alice, bob)
    assert next(iter(second.values()))["fallback"] is True
    # Reported used, so Bob's client makes a new one; a session made from it still works.
    assert selectors.key_counts(bob.device.pk)["device_unused_fallback_key_types"] == []
    message = alice.olm.olm_encrypt(
        bob.olm.curve25519, next(iter(second.values()))["key"], {"n": 1}
    )
    assert bob.olm.olm_decrypt(message) == {"n": 1}
    keys_upload(
        device=bob.device,
        device_keys=None,
        one_time_keys=None,
        fallback_keys=bob.olm.fallback_key(),
    )
    assert selectors.key_counts(bob.device.pk)["device_unused_fallback_key_types"] == [
        "signed_curve25519"
    ]


@override_settings(MESSAGING_CLAIM_CAPACITY=5, MESSAGING_CLAIM_PER_SECOND=0.001)
def test_a_claim_flood_is_refused_and_drains_nobodys_pool():
    bob, mallory, carol = member(otks=20), member(otks=0), member(otks=0)
    group_of(bob, mallory, carol)
    for _ in range(5):
        claim(mallory, bob)
    with pytest.raises(ServiceError) as exc:
        claim(mallory, bob)
    assert exc.value.code == "M_LIMIT_EXCEEDED" and exc.value.status == 429
    assert OneTimeKey.objects.filter(device=bob.device).count() == 15
    # Others still get one-time keys.
    assert "fallback" not in next(iter(claim(carol, bob).values()))


def test_claims_of_unknown_devices_strangers_and_blockers_are_failures():
    alice, bob, stranger = member(otks=0), member(otks=3), member(otks=3)
    group_of(alice, bob)
    answer = keys_claim(
        user=alice.user,
        wanted={
            bob.mxid: {"NOSUCHDEV": "signed_curve25519"},
            stranger.mxid: {stranger.device.device_id: "signed_curve25519"},
        },
    )
    assert answer["one_time_keys"] == {}
    assert answer["failures"] == {
        bob.mxid: {"NOSUCHDEV": "M_NOT_FOUND"},
        stranger.mxid: {stranger.device.device_id: "M_NOT_FOUND"},
    }
    ignored_users_set(user=bob.user, ignored=[alice.mxid])
    assert claim(alice, bob) == {}
    assert OneTimeKey.objects.filter(device=bob.device).count() == 3


def test_device_keys_must_be_the_devices_own_and_cannot_change():
    alice = member()
    other = member()
    with pytest.raises(ServiceError) as exc:
        keys_upload(
            device=alice.device,
            device_keys=DeviceKeysBody.model_validate(other.olm.device_keys()),
            one_time_keys=None,
            fallback_keys=None,
        )
    assert exc.value.code == "M_INVALID_PARAM"
    forged = dict(alice.olm.device_keys())
    forged["keys"] = {
        **forged["keys"],
        f"curve25519:{alice.device.device_id}": other.olm.curve25519,
    }
    with pytest.raises(ServiceError):
        keys_upload(
            device=alice.device,
            device_keys=DeviceKeysBody.model_validate(forged),
            one_time_keys=None,
            fallback_keys=None,
        )


def test_keys_query_answers_for_contacts_only():
    alice, bob, stranger = member(), member(), member()
    group_of(alice, bob)
    answer = selectors.keys_query(user=alice.user, wanted={bob.mxid: [], stranger.mxid: []})
    assert set(answer["device_keys"][bob.mxid]) == {bob.device.device_id}
    assert (
        answer["device_keys"][bob.mxid][bob.device.device_id]["keys"]
        == bob.olm.device_keys()["keys"]
    )
    assert answer["device_keys"][stranger.mxid] == {}


def test_cross_signing_keys_and_signatures_reach_contacts():
    alice, bob = member(), member()
    group_of(alice, bob)

    def key(usage: str, pub: str) -> dict[str, Any]:
        return alice.olm.sign(
            {"user_id": alice.mxid, "usage": [usage], "keys": {f"ed25519:{pub}": pub}}
        )

    signing_keys_upload(
        user=alice.user,
        body=SigningKeysUpload.model_validate(
            {
                "master_key": key("master", "MASTERPUB"),
                "self_signing_key": key("self_signing", "SELFPUB"),
                "user_signing_key": key("user_signing", "USERPUB"),
            }
        ),
    )
    signed_device = {**alice.olm.device_keys()}
    signed_device["signatures"] = {alice.mxid: {"ed25519:SELFPUB": "sig-by-self-signing-key"}}
    answer = signatures_upload(
        user=alice.user, body={alice.mxid: {alice.device.device_id: signed_device}}
    )
    assert answer == {"failures": {}}
    seen_by_bob = selectors.keys_query(user=bob.user, wanted={alice.mxid: []})
    assert seen_by_bob["master_keys"][alice.mxid]["keys"] == {"ed25519:MASTERPUB": "MASTERPUB"}
    assert alice.mxid in seen_by_bob["self_signing_keys"]
    assert seen_by_bob["user_signing_keys"] == {}  # only its owner sees it
    device = seen_by_bob["device_keys"][alice.mxid][alice.device.device_id]
    assert device["signatures"][alice.mxid]["ed25519:SELFPUB"] == "sig-by-self-signing-key"
    # Bob signs Alice's master key with his own (user-signing) key: kept as his signature.
    answer = signatures_upload(
        user=bob.user,
        body={alice.mxid: {"MASTERPUB": {"signatures": {bob.mxid: {"ed25519:BOBUSER": "s"}}}}},
    )
    assert answer == {"failures": {}}
    own = selectors.keys_query(user=alice.user, wanted={alice.mxid: []})
    assert own["master_keys"][alice.mxid]["signatures"][bob.mxid] == {"ed25519:BOBUSER": "s"}
    assert alice.mxid in own["user_signing_keys"]
    # Someone else's key cannot be uploaded as yours.
    with pytest.raises(ServiceError):
        signing_keys_upload(
            user=bob.user,
            body=SigningKeysUpload.model_validate({"master_key": key("master", "X")}),
        )
