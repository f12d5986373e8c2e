// node --test tests/js/ — the in-memory replay store.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ReplayStore } from "../../static/voice/js/media/replay-store.js";

const packet = (txId, seq, last = false) => ({
  kind: 1, txId, seq, last, captureTs: 1000 + seq * 40, frames: [new Uint8Array([1]), new Uint8Array([2])],
});

test("keeps the last five transmissions, newest first", () => {
  const store = new ReplayStore();
  for (let tx = 1; tx <= 7; tx++) {
    store.begin(tx, { nickname: `n${tx}` });
    store.add(packet(tx, 0));
    store.add(packet(tx, 1, true));
  }
  assert.deepEqual(store.list().map((i) => i.txId), [7, 6, 5, 4, 3]);
  assert.equal(store.get(1), null);
  const item = store.list()[0];
  assert.equal(item.meta.nickname, "n7");
  assert.equal(item.complete, true);
  assert.equal(item.durationMs, 80);
  assert.equal(item.packets, 2);
});

test("packets come back in seq order; begin after the first packet keeps them", () => {
  const store = new ReplayStore({ limit: 2 });
  store.add(packet(9, 2));
  store.add(packet(9, 0));
  store.begin(9, { nickname: "late" });
  store.add(packet(9, 1));
  store.end(9);
  const item = store.get(9);
  assert.deepEqual(item.packets.map((p) => p.seq), [0, 1, 2]);
  assert.equal(item.meta.nickname, "late");
  assert.equal(item.complete, true);
});

test("remove and clear forget the audio", () => {
  const store = new ReplayStore();
  store.add(packet(1, 0));
  store.add(packet(2, 0));
  store.remove(1);
  assert.deepEqual(store.list().map((i) => i.txId), [2]);
  store.clear();
  assert.deepEqual(store.list(), []);
});
