// node --test tests/js/
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  packPacket, unpackPacket, peekHeader, KIND_OPUS, KIND_WEBM, HEADER_BYTES,
} from "../../static/voice/js/media/protocol.js";

test("constants", () => {
  assert.equal(KIND_OPUS, 1);
  assert.equal(KIND_WEBM, 2);
  assert.equal(HEADER_BYTES, 16);
});

test("kind 1 round trip and exact byte layout", () => {
  const frames = [new Uint8Array([1, 2, 3]), new Uint8Array([9])];
  const buf = packPacket({ kind: 1, last: true, seq: 513, txId: 0x01020304, captureTs: 1234.5, frames });
  const b = new Uint8Array(buf);
  assert.equal(b.byteLength, 16 + 2 + 3 + 2 + 1);
  assert.deepEqual([...b.subarray(0, 8)], [1, 1, 2, 1, 1, 2, 3, 4]);
  assert.equal(new DataView(buf).getFloat64(8), 1234.5);
  assert.deepEqual([...b.subarray(16)], [0, 3, 1, 2, 3, 0, 1, 9]);
  const p = unpackPacket(buf);
  assert.equal(p.kind, 1);
  assert.equal(p.last, true);
  assert.equal(p.seq, 513);
  assert.equal(p.txId, 0x01020304);
  assert.equal(p.captureTs, 1234.5);
  assert.deepEqual(p.frames.map((f) => [...f]), [[1, 2, 3], [9]]);
  assert.deepEqual(peekHeader(buf), { kind: 1, last: true, seq: 513, txId: 0x01020304, captureTs: 1234.5 });
});

test("kind 2 round trip", () => {
  const chunk = new Uint8Array([0x1a, 0x45, 0xdf, 0xa3, 7]);
  const p = unpackPacket(packPacket({ kind: 2, seq: 0, txId: 7, captureTs: 1.25, chunk }));
  assert.equal(p.kind, 2);
  assert.equal(p.last, false);
  assert.deepEqual([...p.chunk], [...chunk]);
});

test("pack rejects bad input", () => {
  const ok = { kind: 1, seq: 0, txId: 1, captureTs: 0, frames: [new Uint8Array([1])] };
  assert.throws(() => packPacket({ ...ok, kind: 3 }));
  assert.throws(() => packPacket({ ...ok, seq: 65536 }));
  assert.throws(() => packPacket({ ...ok, seq: -1 }));
  assert.throws(() => packPacket({ ...ok, txId: 2 ** 32 }));
  assert.throws(() => packPacket({ ...ok, captureTs: NaN }));
  assert.throws(() => packPacket({ ...ok, frames: [] }));
  assert.throws(() => packPacket({ ...ok, frames: [new Uint8Array(0)] }));
  assert.throws(() => packPacket({ ...ok, frames: [new Uint8Array(70000)] }));
  assert.throws(() => packPacket({ kind: 2, seq: 0, txId: 1, captureTs: 0, chunk: new Uint8Array(0) }));
});

test("unpack rejects malformed packets", () => {
  const good = new Uint8Array(packPacket({ kind: 1, seq: 0, txId: 1, captureTs: 0, frames: [new Uint8Array([5, 6])] }));
  assert.throws(() => unpackPacket(good.slice(0, 10).buffer), /shorter/);
  assert.throws(() => unpackPacket(good.slice(0, 16).buffer), /shorter/);
  const truncated = good.slice(0, good.length - 1);
  assert.throws(() => unpackPacket(truncated.buffer), /past the packet end/);
  const dangling = new Uint8Array([...good, 0]);
  assert.throws(() => unpackPacket(dangling.buffer), /truncated/);
  const zeroLen = new Uint8Array([...good, 0, 0]);
  assert.throws(() => unpackPacket(zeroLen.buffer), /empty/);
  const badKind = good.slice(); badKind[0] = 9;
  assert.throws(() => unpackPacket(badKind.buffer), /kind/);
  const badFlags = good.slice(); badFlags[1] = 0x80;
  assert.throws(() => unpackPacket(badFlags.buffer), /flags/);
  const nanTs = good.slice(); new DataView(nanTs.buffer).setFloat64(8, NaN);
  assert.throws(() => unpackPacket(nanTs.buffer), /finite/);
  assert.throws(() => unpackPacket("nope"), TypeError);
});
