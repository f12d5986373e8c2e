"""Matrix signed JSON: canonical JSON and Ed25519 signature checks (the spec's "Signing JSON",
https://spec.matrix.org/v1.12/appendices/#signing-json). Pure functions, no database.

The server checks what it stores so a device cannot publish keys it cannot sign for (a
forged device, a one-time key swapped in transit, a cross-signing key no master signed);
clients still check every signature themselves."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def canonical_json(obj: dict[str, Any]) -> bytes:
    """The bytes that were signed: `signatures` and `unsigned` removed, keys sorted, no
    spaces, UTF-8 (no \\u escapes beyond JSON's own)."""
    bare = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return json.dumps(bare, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def unpadded_b64decode(text: str) -> bytes | None:
    """Matrix's unpadded base64 (padding tolerated); None if it is not base64."""
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def ed25519_public_key(text: str) -> Ed25519PublicKey | None:
    raw = unpadded_b64decode(text)
    if raw is None or len(raw) != 32:
        return None
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return None


def signature_valid(obj: dict[str, Any], *, signer: str, key_id: str, public_key: str) -> bool:
    """True if `obj.signatures[signer][key_id]` is `public_key`'s signature of `obj` (any
    other shape, as a client may send anything there, is simply not valid)."""
    sig_text = signatures_of(obj, signer).get(key_id)
    key = ed25519_public_key(public_key)
    sig = unpadded_b64decode(sig_text) if isinstance(sig_text, str) else None
    if key is None or sig is None or len(sig) != 64:
        return False
    try:
        key.verify(sig, canonical_json(obj))
    except InvalidSignature:
        return False
    return True


def signatures_of(obj: dict[str, Any], signer: str) -> dict[str, Any]:
    """`obj.signatures[signer]`, or {} when that is missing or not an object."""
    signatures = obj.get("signatures")
    mine = signatures.get(signer) if isinstance(signatures, dict) else None
    return mine if isinstance(mine, dict) else {}


def same_signed_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The two objects say the same thing (signatures and unsigned aside)."""
    return canonical_json(a) == canonical_json(b)


def cross_signing_public_key(key: dict[str, Any]) -> str | None:
    """The one public key of a cross-signing key object (`keys` = {"ed25519:<pub>": <pub>}),
    or None when it does not have exactly one well-formed Ed25519 key."""
    keys = key.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        return None
    ((key_id, public),) = keys.items()
    if key_id != f"ed25519:{public}" or ed25519_public_key(public) is None:
        return None
    return str(public)
