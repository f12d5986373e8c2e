"""CallsApp keys/upload signature checks: what checking every key's Ed25519 signature
(messaging.signing, over canonical JSON) costs the server per request.

Keys and signatures are real, made with Python vodozemac (as the browser's SDK would);
the check is the server's own code. No database or network: this is the CPU added to a
keys/upload (or keys/device_signing/upload) request on top of its SQL.

    python benchmarks/key_signatures.py --rounds 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import vodozemac

from benchmarks._common import percentile, table
from messaging.signing import canonical_json, signature_valid


def signed(account: vodozemac.Account, user: str, device: str, obj: dict) -> dict:
    sig = account.sign(canonical_json(obj)).to_base64()
    return {**obj, "signatures": {user: {f"ed25519:{device}": sig}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed runs per row")
    args = parser.parse_args()

    user, device = "@1:localhost", "BENCHDEVIC"
    account = vodozemac.Account()
    ed = account.ed25519_key.to_base64()
    device_keys = signed(
        account,
        user,
        device,
        {
            "user_id": user,
            "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                f"curve25519:{device}": account.curve25519_key.to_base64(),
                f"ed25519:{device}": ed,
            },
        },
    )
    account.generate_one_time_keys(100)
    otks = [
        signed(account, user, device, {"key": key.to_base64()})
        for key in account.one_time_keys.values()
    ]

    def check(objs: list[dict]) -> float:
        start = time.perf_counter()
        for obj in objs:
            assert signature_valid(obj, signer=user, key_id=f"ed25519:{device}", public_key=ed)
        return (time.perf_counter() - start) * 1000

    rows = []
    for label, objs in (
        ("device_keys (1 object)", [device_keys]),
        ("one-time keys, a typical upload (50)", otks[:50]),
        ("one-time keys, the largest upload (100)", otks),
    ):
        check(objs)  # warm up
        times = sorted(check(objs) for _ in range(args.rounds))
        per = percentile(times, 50) * 1000 / len(objs)
        rows.append((label, len(objs), percentile(times, 50), percentile(times, 99), per))
    print(
        table(
            f"Signature checks per keys/upload request ({args.rounds} rounds each)",
            ["request", "signatures", "p50 ms", "p99 ms", "us per signature (p50)"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
