// node --test tests/js/: CallsApp's delayed acks (static/messaging/js/acks.js). Timers are
// node's mocked ones: time is moved, never waited for.
import { test } from "node:test";
import assert from "node:assert/strict";

import { ACK_DELAY_MS, DelayedAck } from "../../static/messaging/js/acks.js";

function acker(options) {
  const sent = [];
  return { acks: new DelayedAck((seq) => sent.push(seq), options), sent };
}

test("a stored frame is acked after the delay, once, with the highest seq", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { acks, sent } = acker();
  acks.stored(5);
  acks.stored(6);
  t.mock.timers.tick(ACK_DELAY_MS - 1);
  assert.deepEqual(sent, []);
  t.mock.timers.tick(1);
  assert.deepEqual(sent, [6]);
  t.mock.timers.tick(10 * ACK_DELAY_MS);
  assert.deepEqual(sent, [6]);
});

test("a send takes the ack: no ack frame of its own follows", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { acks, sent } = acker();
  acks.stored(9);
  assert.equal(acks.take(), 9);
  assert.equal(acks.take(), undefined);
  t.mock.timers.tick(10 * ACK_DELAY_MS);
  assert.deepEqual(sent, []);
});

test("the backlog after a hello is acked at once", () => {
  const { acks, sent } = acker();
  acks.stored(3, { now: true });
  assert.deepEqual(sent, [3]);
});

test("many frames held ack at once, so the server's window never fills", () => {
  const { acks, sent } = acker({ maxHeld: 4 });
  for (const seq of [1, 2, 3]) acks.stored(seq);
  assert.deepEqual(sent, []);
  acks.stored(4);
  assert.deepEqual(sent, [4]);
  acks.reset();
});

test("a closed socket drops what was held: the next hello says where the client is", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { acks, sent } = acker();
  acks.stored(7);
  acks.reset();
  t.mock.timers.tick(10 * ACK_DELAY_MS);
  assert.deepEqual(sent, []);
  assert.equal(acks.take(), undefined);
});

test("a seq below one held does not lower it", () => {
  const { acks } = acker();
  acks.stored(8);
  acks.stored(4);
  assert.equal(acks.take(), 8);
});
