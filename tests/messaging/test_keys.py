"""keys/upload, keys/claim, keys/query: one-time keys handed out exactly once under
concurrency, then the fallback key; claim floods and blocks refused; every key object's
signature checked (forged, tampered and valid ones made here with vodozemac)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from messaging import selectors
from messaging.ids import mxid
from messaging.models import CrossSigningKey, DeviceKeys, FallbackKey, OneTimeKey
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
from tests.factories import DeviceFactory, UserFactory
from tests.messaging.conftest import Member, member, new_device_id
from tests.messaging.olm import CrossSigning, OlmDevice, canonical
from tests.messaging.test_api import Browser

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


def test_a_device_keeps_its_newest_one_time_keys_only():
    """A page that uploaded a batch of keys at every sync frame grew its device's pool
    without bound; claims take the oldest first, whose private halves it may have dropped."""
    bob = member(otks=0)
    batches = [bob.olm.one_time_keys(50) for _ in range(3)]
    for batch in batches:
        answer = keys_upload(
            device=bob.device, device_keys=None, one_time_keys=batch, fallback_keys=None
        )
    assert answer == {"one_time_key_counts": {"signed_curve25519": 100}}
    kept = set(OneTimeKey.objects.filter(device=bob.device).values_list("key_id", flat=True))
    assert kept == {key_id.split(":", 1)[1] for batch in batches[1:] for key_id in batch}


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


def fresh() -> Member:
    """A device that has uploaded nothing yet."""
    user = UserFactory()
    device = DeviceFactory(user=user, device_id=new_device_id())
    return Member(user, device, OlmDevice(mxid(user.pk), device.device_id))


def forged_by(other: OlmDevice, obj: dict[str, Any], user_id: str, key_id: str) -> Any:
    """`obj` with a signature under `user_id`'s `key_id` that `other`'s key made."""
    sig = other.account.sign(canonical(obj)).to_base64()
    return {**obj, "signatures": {user_id: {key_id: sig}}}


def upload(m: Member, device_keys: Any = None, otks: Any = None, fallback: Any = None) -> Any:
    return keys_upload(
        device=m.device,
        device_keys=DeviceKeysBody.model_validate(device_keys) if device_keys else None,
        one_time_keys=otks,
        fallback_keys=fallback,
    )


def refused(code: str, fn: Any, *args: Any, **kwargs: Any) -> ServiceError:
    with pytest.raises(ServiceError) as exc:
        fn(*args, **kwargs)
    assert exc.value.code == code, exc.value.detail
    return exc.value


def test_device_keys_must_carry_the_devices_own_valid_signature():
    alice, other = fresh(), fresh()
    good = alice.olm.device_keys()
    unsigned = {**good, "signatures": {}}
    # Forged: Alice's keys with a signature under her key id, made by another device's key.
    forged = forged_by(other.olm, good, alice.mxid, f"ed25519:{alice.device.device_id}")
    # Tampered: signed, then an algorithm added.
    tampered = {**good, "algorithms": [*good["algorithms"], "m.megolm.v2.aes-sha2"]}
    # Garbage where the signature should be.
    garbage = {**good, "signatures": {alice.mxid: {f"ed25519:{alice.device.device_id}": "!!"}}}
    for body in (forged, tampered, garbage):
        refused("M_INVALID_SIGNATURE", upload, alice, body, alice.olm.one_time_keys(2))
    refused("M_INVALID_SIGNATURE", upload, alice, unsigned)
    assert not DeviceKeys.objects.filter(device=alice.device).exists()
    assert not OneTimeKey.objects.filter(device=alice.device).exists()
    upload(alice, good, alice.olm.one_time_keys(2))
    assert DeviceKeys.objects.get(device=alice.device).ed25519 == alice.olm.ed25519
    assert OneTimeKey.objects.filter(device=alice.device).count() == 2


def test_one_time_and_fallback_keys_must_be_signed_by_the_device():
    alice, other = fresh(), fresh()
    refused("M_INVALID_PARAM", upload, alice, None, alice.olm.one_time_keys(1))  # keys first
    upload(alice, alice.olm.device_keys())

    good = alice.olm.one_time_keys(3)
    (first, *_) = good
    # Forged: signed by another device. Tampered: the key swapped after signing.
    forged = {
        **good,
        first: forged_by(other.olm, good[first], alice.mxid, f"ed25519:{alice.device.device_id}"),
    }
    tampered = {**good, first: {**good[first], "key": other.olm.curve25519}}
    unsigned = {**good, first: {"key": good[first]["key"]}}
    bare_string = {**good, first: good[first]["key"]}
    for otks in (forged, tampered, unsigned):
        refused("M_INVALID_SIGNATURE", upload, alice, None, otks)
    refused("M_INVALID_PARAM", upload, alice, None, bare_string)
    refused(
        "M_INVALID_PARAM", upload, alice, None, {"curve25519:AAAA": good[first]}
    )  # unknown algorithm
    assert not OneTimeKey.objects.filter(device=alice.device).exists()  # nothing half-stored

    fallback = alice.olm.fallback_key()
    ((fid, fkey),) = fallback.items()
    not_fallback = {fid: {k: v for k, v in fkey.items() if k != "fallback"}}  # flag dropped
    refused("M_INVALID_SIGNATURE", upload, alice, None, good, not_fallback)
    assert not OneTimeKey.objects.filter(device=alice.device).exists()
    assert not FallbackKey.objects.filter(device=alice.device).exists()

    assert upload(alice, None, good, fallback)["one_time_key_counts"] == {"signed_curve25519": 3}
    assert FallbackKey.objects.filter(device=alice.device).count() == 1


def test_keys_upload_over_http_answers_m_invalid_signature():
    alice = Browser()
    body = alice.olm.device_keys()
    body["keys"] = {**body["keys"], f"curve25519:{alice.device.device_id}": fresh().olm.curve25519}
    resp = alice.call("POST", "keys/upload", {"device_keys": body})
    assert resp.status_code == 400
    assert resp.json()["errcode"] == "M_INVALID_SIGNATURE"
    assert not DeviceKeys.objects.filter(device=alice.device).exists()


def signing_upload(m: Member, body: dict[str, Any]) -> None:
    signing_keys_upload(user=m.user, body=SigningKeysUpload.model_validate(body))


def test_cross_signing_keys_must_be_signed_by_the_master_key():
    alice, bob = member(), member()
    xs = CrossSigning(alice.mxid)
    good = xs.upload_body(alice.olm)
    impostor = CrossSigning(alice.mxid)
    # The self-signing key signed by some other master key, or by nobody.
    other_master = {**good, "self_signing_key": impostor.upload_body()["self_signing_key"]}
    no_sig = {**good, "user_signing_key": {**good["user_signing_key"], "signatures": {}}}
    # A master key "signed" by Alice's device with a signature that is not the device's.
    bad_device_sig = {
        **good,
        "master_key": forged_by(
            bob.olm, good["master_key"], alice.mxid, f"ed25519:{alice.device.device_id}"
        ),
    }
    # Two keys in one, or a key id that does not name its key.
    pub = xs.pub(xs.master)
    two_keys = {
        **good,
        "master_key": {**good["master_key"], "keys": {f"ed25519:{pub}": pub, "ed25519:X": pub}},
    }
    for body in (other_master, no_sig, bad_device_sig):
        refused("M_INVALID_SIGNATURE", signing_upload, alice, body)
    refused("M_INVALID_PARAM", signing_upload, alice, two_keys)
    assert not CrossSigningKey.objects.filter(user=alice.user).exists()
    # Someone else's key cannot be uploaded as yours.
    refused("M_INVALID_PARAM", signing_upload, bob, good)

    signing_upload(alice, good)
    assert CrossSigningKey.objects.filter(user=alice.user).count() == 3
    # A later upload of one key alone is checked against the stored master key.
    refused(
        "M_INVALID_SIGNATURE",
        signing_upload,
        alice,
        {"user_signing_key": impostor.upload_body()["user_signing_key"]},
    )
    newer = CrossSigning(alice.mxid)
    newer.master = xs.master
    signing_upload(alice, {"user_signing_key": newer.upload_body()["user_signing_key"]})
    assert (
        CrossSigningKey.objects.get(user=alice.user, usage="user_signing").key["keys"]
        == newer.key("user_signing", newer.user_signing)["keys"]
    )


def test_signatures_upload_keeps_only_valid_signatures_by_allowed_keys():
    alice, bob, carol = member(), member(), member()
    group_of(alice, bob, carol)
    xa, xb = CrossSigning(alice.mxid), CrossSigning(bob.mxid)
    signing_upload(alice, xa.upload_body(alice.olm))
    signing_upload(bob, xb.upload_body(bob.olm))
    device = alice.device.device_id
    stored_device = DeviceKeys.objects.get(device=alice.device).keys
    a_master = xa.upload_body(alice.olm)["master_key"]
    a_master_pub = xa.pub(xa.master)

    # Alice's self-signing key signs her device: kept.
    signed = xa.sign_with(xa.self_signing, stored_device)
    assert signatures_upload(user=alice.user, body={alice.mxid: {device: signed}}) == {
        "failures": {}
    }
    ssk_id = f"ed25519:{xa.pub(xa.self_signing)}"
    kept = DeviceKeys.objects.get(device=alice.device).keys["signatures"][alice.mxid]
    assert kept[ssk_id] == signed["signatures"][alice.mxid][ssk_id]

    def failure(by: Member, owner: Member, key_id: str, obj: dict[str, Any]) -> Any:
        answer = signatures_upload(user=by.user, body={owner.mxid: {key_id: obj}})
        return answer["failures"].get(owner.mxid, {}).get(key_id, {}).get("errcode")

    # Forged: a signature under the self-signing key's id, made by another key.
    impostor = CrossSigning(alice.mxid)
    forged = impostor.sign_with(impostor.self_signing, stored_device)
    forged["signatures"][alice.mxid] = {
        ssk_id: next(iter(forged["signatures"][alice.mxid].values()))
    }
    assert failure(alice, alice, device, forged) == "M_INVALID_SIGNATURE"
    # Tampered: a validly signed object that is not the stored key.
    other_keys = xa.sign_with(
        xa.self_signing, {**stored_device, "algorithms": ["m.megolm.v1.aes-sha2"]}
    )
    assert failure(alice, alice, device, other_keys) == "M_INVALID_SIGNATURE"
    # Bob may not sign Alice's device, even with a valid signature of his.
    by_bob = xb.sign_with(xb.user_signing, stored_device)
    assert failure(bob, alice, device, by_bob) == "M_INVALID_SIGNATURE"
    # Bob's self-signing key is not the one that signs other people's master keys.
    assert (
        failure(bob, alice, a_master_pub, xb.sign_with(xb.self_signing, a_master))
        == "M_INVALID_SIGNATURE"
    )
    # A stranger's keys are not there to sign.
    stranger = member()
    assert failure(bob, stranger, stranger.device.device_id, {}) == "M_NOT_FOUND"
    after = DeviceKeys.objects.get(device=alice.device).keys["signatures"][alice.mxid]
    assert after == kept  # nothing added by the refused uploads

    # Bob verified Alice: his user-signing key signs her master key. Kept, and shown to Bob
    # (so his devices see her as verified) but not to Carol, nor to Alice.
    vouched = xb.sign_with(xb.user_signing, a_master)
    assert failure(bob, alice, a_master_pub, vouched) is None
    usk_id = f"ed25519:{xb.pub(xb.user_signing)}"
    seen = {
        who.mxid: selectors.keys_query(user=who.user, wanted={alice.mxid: []})["master_keys"][
            alice.mxid
        ]["signatures"]
        for who in (alice, bob, carol)
    }
    assert seen[bob.mxid][bob.mxid] == {usk_id: vouched["signatures"][bob.mxid][usk_id]}
    assert bob.mxid not in seen[carol.mxid] and bob.mxid not in seen[alice.mxid]
    assert seen[carol.mxid][alice.mxid]  # the owner's own device signature stays visible

    # Alice's device signs her own master key (what the SDK does after verifying it).
    stored_master = CrossSigningKey.objects.get(user=alice.user, usage="master").key
    second = member(alice.user)
    by_device = second.olm.sign(stored_master)
    by_device["signatures"] = {
        **stored_master["signatures"],
        alice.mxid: {
            **stored_master["signatures"][alice.mxid],
            **by_device["signatures"][alice.mxid],
        },
    }
    assert failure(alice, alice, a_master_pub, by_device) is None
    assert (
        f"ed25519:{second.device.device_id}"
        in CrossSigningKey.objects.get(user=alice.user, usage="master").key["signatures"][
            alice.mxid
        ]
    )


@pytest.mark.parametrize("shape", [[], "x", 7, {"ME": "x"}, {"ME": []}, {"ME": {"ed25519:DEV": 5}}])
def test_malformed_signatures_are_refused_not_crashed_on(shape):
    alice = member()
    device_key_id = f"ed25519:{alice.device.device_id}"
    signatures = json.loads(
        json.dumps(shape).replace("ME", alice.mxid).replace("ed25519:DEV", device_key_id)
    )
    (kid, key), *_ = alice.olm.one_time_keys(2).items()
    refused(
        "M_INVALID_SIGNATURE",
        upload,
        alice,
        None,
        {kid: {**key, "signatures": signatures}},
    )
    stored = DeviceKeys.objects.get(device=alice.device).keys
    answer = signatures_upload(
        user=alice.user,
        body={alice.mxid: {alice.device.device_id: {**stored, "signatures": signatures}}},
    )
    failure = answer["failures"][alice.mxid][alice.device.device_id]
    assert failure["errcode"] == "M_INVALID_SIGNATURE"
