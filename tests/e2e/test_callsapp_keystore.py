"""CallsApp's key store in a real browser: the store passphrase is random and kept only as
ciphertext under a non-extractable AES-GCM key in IndexedDB; one tab at a time writes a
device's store (Web Locks)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

KEYSTORE = "/static/messaging/js/keystore.js"


def test_passphrase_is_random_kept_encrypted_by_a_non_extractable_key(live_asgi, new_context):
    page = new_context().new_page()
    page.goto(f"{live_asgi.url}/")
    out = page.evaluate(
        """async (path) => {
          const ks = await import(path);
          const before = await ks.hasDeviceSecrets("@1:test", "AAAAAAAAAA");
          const p1 = await ks.storePassphrase("@1:test", "AAAAAAAAAA");
          const again = await ks.storePassphrase("@1:test", "AAAAAAAAAA");
          const other = await ks.storePassphrase("@1:test", "BBBBBBBBBB");
          const after = await ks.hasDeviceSecrets("@1:test", "AAAAAAAAAA");
          // What IndexedDB actually holds for that device.
          const db = await new Promise((ok) => { const r = indexedDB.open("callsapp-keystore");
                                                  r.onsuccess = () => ok(r.result); });
          const rec = await new Promise((ok) => {
            const r = db.transaction("passphrases").objectStore("passphrases")
              .get("@1:test|AAAAAAAAAA");
            r.onsuccess = () => ok(r.result); });
          db.close();
          let exported = "refused";
          try { await crypto.subtle.exportKey("raw", rec.cryptoKey); exported = "exported"; }
          catch (e) { exported = e.name; }
          const stored = new Uint8Array(rec.encrypted);
          const plain = new TextEncoder().encode(p1);
          const holdsPlain = JSON.stringify(Array.from(stored)).includes(
            JSON.stringify(Array.from(plain)).slice(1, -1));
          await ks.forgetDevice("@1:test", "AAAAAAAAAA");
          const forgotten = !(await ks.hasDeviceSecrets("@1:test", "AAAAAAAAAA"));
          return {before, after, p1, again, other, exported, holdsPlain, forgotten,
                  extractable: rec.cryptoKey.extractable, algo: rec.cryptoKey.algorithm.name,
                  keys: Object.keys(rec).sort()};
        }""",
        KEYSTORE,
    )
    assert out["before"] is False and out["after"] is True
    assert len(out["p1"]) == 44  # 32 random bytes, base64
    assert out["again"] == out["p1"]
    assert out["other"] != out["p1"]
    assert out["extractable"] is False and out["algo"] == "AES-GCM"
    assert out["exported"] == "InvalidAccessError"
    assert out["keys"] == ["cryptoKey", "encrypted", "iv"]
    assert out["holdsPlain"] is False
    assert out["forgotten"] is True


def test_second_tab_of_a_device_waits_for_the_first(live_asgi, new_context):
    context = new_context()
    first, second = context.new_page(), context.new_page()
    for page in (first, second):
        page.goto(f"{live_asgi.url}/")
    take = """async (path) => {
        const ks = await import(path);
        window.lockState = "asking";
        const onWait = () => { window.lockState = "waiting"; };
        ks.acquireDeviceLock("@1:test", "AAAAAAAAAA", {onWait})
          .then((release) => { window.lockState = "held"; window.releaseLock = release; });
    }"""
    first.evaluate(take, KEYSTORE)
    first.wait_for_function("() => window.lockState === 'held'")
    second.evaluate(take, KEYSTORE)
    second.wait_for_function("() => window.lockState === 'waiting'")
    # Another device's lock is independent.
    assert second.evaluate(
        """async (path) => {
          const ks = await import(path);
          const release = await ks.acquireDeviceLock("@1:test", "BBBBBBBBBB");
          release();
          return true;
        }""",
        KEYSTORE,
    )
    assert second.evaluate("window.lockState") == "waiting"
    # The first tab goes away: the second becomes the writer.
    first.close()
    second.wait_for_function("() => window.lockState === 'held'")
