"""The Matrix crypto SDK, installed from the npm registry, loads in Chromium from our static
files (no bundler) and runs an OlmMachine on its IndexedDB store."""

from __future__ import annotations

import urllib.request

import pytest

pytestmark = pytest.mark.e2e

SDK = "/static/vendor/@matrix-org/matrix-sdk-crypto-wasm"


def test_wasm_is_served_as_application_wasm(live_asgi):
    url = f"{live_asgi.url}{SDK}/pkg/matrix_sdk_crypto_wasm_bg.wasm"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/wasm"
        assert resp.read(4) == b"\0asm"


def test_olm_machine_runs_in_chromium_on_indexeddb(live_asgi, new_context):
    page = new_context().new_page()
    page.goto(f"{live_asgi.url}/")
    keys = page.evaluate(
        """async (sdk) => {
          const m = await import(sdk + "/index.mjs");
          await m.initAsync();
          const machine = await m.OlmMachine.initialize(
            new m.UserId("@1:test"), new m.DeviceId("ABCDEFGHIJ"), "sdk-smoke", "pass");
          const ids = machine.identityKeys;
          const out = {curve: ids.curve25519.toBase64(), ed: ids.ed25519.toBase64(),
                       requests: (await machine.outgoingRequests()).map(r => r.type)};
          machine.close();
          out.dbs = (await indexedDB.databases()).map(d => d.name);
          return out;
        }""",
        SDK,
    )
    assert len(keys["curve"]) == 43 and len(keys["ed"]) == 43
    # A fresh device first uploads its keys (RequestType.KeysUpload == 0).
    assert 0 in keys["requests"]
    assert any(name.startswith("sdk-smoke") for name in keys["dbs"])
