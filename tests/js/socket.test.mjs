// node --test tests/js/: LiveSocket's reconnect rules and its send that never drops a
// message silently, with a stand-in for the browser's WebSocket (node has none to open
// against our server here) and node's mock clock.
import { test, mock, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";

class FakeWebSocket {
  static OPEN = 1;
  static made = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeWebSocket.made.push(this);
  }
  send(data) { this.sent.push(data); }
  close(code) { this.readyState = 3; this.onclose?.({ code }); }
  open() { this.readyState = 1; this.onopen?.(); }
  drop(code) { this.readyState = 3; this.onclose?.({ code }); }
}

globalThis.WebSocket = FakeWebSocket;
globalThis.location = { protocol: "https:", host: "example.test" };
const { LiveSocket, wsUrl, backoffDelay, FINAL_CLOSE_CODES } = await import(
  "../../static/shared/js/socket.js"
);

let random = 0;
beforeEach(() => {
  FakeWebSocket.made = [];
  random = 0;
  mock.method(Math, "random", () => random);
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 1_000_000 });
});
afterEach(() => {
  mock.timers.reset();
  mock.restoreAll();
});

const last = () => FakeWebSocket.made.at(-1);
const sentTypes = (ws) => ws.sent.map((d) => JSON.parse(d).type);

function connected(options) {
  const s = new LiveSocket("/ws/x/", options).connect();
  last().open();
  return s;
}

function record(s, name) {
  const seen = [];
  s.addEventListener(name, (e) => seen.push(e.detail));
  return seen;
}

test("wsUrl follows the page's scheme and host", () => {
  assert.equal(wsUrl("/ws/cbline/", { a: "1", none: null }), "wss://example.test/ws/cbline/?a=1");
});

test("backoff grows exponentially with jitter, up to a cap", () => {
  const at = (attempt, r) => backoffDelay(attempt, { baseMs: 500, maxMs: 15000, random: () => r });
  assert.deepEqual([0, 1, 2, 3].map((a) => at(a, 0)), [250, 500, 1000, 2000]);
  assert.deepEqual([0, 1, 2, 3].map((a) => at(a, 1)), [500, 1000, 2000, 4000]);
  assert.equal(at(20, 0), 7500);
  assert.equal(at(20, 1), 15000);
  // Two clients dropped at the same instant do not come back at the same instant.
  assert.notEqual(at(3, 0.1), at(3, 0.9));
});

test("a dropped connection reconnects after a jittered delay and is not ended", () => {
  random = 0.5;
  const s = connected();
  const closes = record(s, "close");
  last().drop(1006);
  assert.deepEqual(closes, [{ code: 1006, final: false, reconnectInMs: 375 }]);
  assert.equal(s.ended, false);
  mock.timers.tick(374);
  assert.equal(FakeWebSocket.made.length, 1);
  mock.timers.tick(1);
  assert.equal(FakeWebSocket.made.length, 2);
});

test("repeated failures back off further; a socket that stayed up starts over", () => {
  const s = connected();
  const delays = record(s, "close");
  for (let i = 0; i < 4; i++) {
    last().drop(4013); // Redis briefly away: the server closes at once, again and again
    mock.timers.tick(delays.at(-1).reconnectInMs);
    last().open();
  }
  assert.deepEqual(delays.map((d) => d.reconnectInMs), [250, 500, 1000, 2000]);
  mock.timers.tick(10_000); // up and healthy for a while
  last().drop(4012);
  assert.equal(delays.at(-1).reconnectInMs, 250);
});

for (const code of [4002, 4012, 4013, 1012, 1013, 1006, 1011]) {
  test(`close code ${code} reconnects`, () => {
    const s = connected();
    last().drop(code);
    assert.equal(s.ended, false);
    mock.timers.tick(500);
    assert.equal(FakeWebSocket.made.length, 2);
  });
}

for (const code of [4001, 4401, 4403, 4409]) {
  test(`close code ${code} is final: no reconnect`, () => {
    const s = connected();
    const closes = record(s, "close");
    last().drop(code);
    assert.equal(s.ended, true);
    assert.deepEqual(closes, [{ code, final: true, reconnectInMs: null }]);
    mock.timers.tick(60_000);
    assert.equal(FakeWebSocket.made.length, 1);
  });
}

test("the final codes are exactly those of realtime/closecodes.py", () => {
  assert.deepEqual([...FINAL_CLOSE_CODES].sort(), [4001, 4401, 4403, 4409]);
});

test("too many connects (4429): wait at least tryLaterMs before coming back", () => {
  const s = connected({ tryLaterMs: 5000 });
  const closes = record(s, "close");
  last().drop(4429);
  assert.equal(closes[0].reconnectInMs, 5000);
  mock.timers.tick(4999);
  assert.equal(FakeWebSocket.made.length, 1);
  mock.timers.tick(1);
  assert.equal(FakeWebSocket.made.length, 2);
});

test("closing it ourselves stops it", () => {
  const s = connected();
  s.close();
  assert.equal(s.ended, true);
  mock.timers.tick(60_000);
  assert.equal(FakeWebSocket.made.length, 1);
});

test("send while open sends at once", () => {
  const s = connected();
  assert.equal(s.send({ type: "a" }), true);
  assert.deepEqual(sentTypes(last()), ["a"]);
});

test("send while disconnected without queueing says so: false and an unsent event", () => {
  const s = connected();
  const unsent = record(s, "unsent");
  last().drop(1006);
  assert.equal(s.send({ type: "floor.request" }), false);
  assert.deepEqual(unsent, [{ message: { type: "floor.request" }, reason: "disconnected" }]);
  mock.timers.tick(500);
  last().open();
  assert.deepEqual(sentTypes(last()), []); // not sent late behind the user's back
});

test("queued sends go out in order after reconnecting, after the page's own open handlers", () => {
  const s = connected();
  s.addEventListener("open", () => s.send({ type: "rejoin" }));
  last().drop(1012);
  assert.equal(s.send({ type: "one" }, { queue: true }), "queued");
  assert.equal(s.send({ type: "two" }, { queue: true }), "queued");
  assert.equal(s.queued, 2);
  mock.timers.tick(500);
  last().open();
  assert.deepEqual(sentTypes(last()), ["rejoin", "one", "two"]);
  assert.equal(s.queued, 0);
});

test("a queued message that waited too long is reported, not sent", () => {
  const s = connected({ maxQueuedAgeMs: 1000 });
  const unsent = record(s, "unsent");
  last().drop(1006);
  s.send({ type: "old" }, { queue: true });
  mock.timers.tick(900);
  s.send({ type: "fresh" }, { queue: true });
  mock.timers.tick(600);
  last().open();
  assert.deepEqual(sentTypes(last()), ["fresh"]);
  assert.deepEqual(unsent, [{ message: { type: "old" }, reason: "expired" }]);
});

test("a full queue refuses, and says so", () => {
  const s = connected({ maxQueued: 2 });
  const unsent = record(s, "unsent");
  last().drop(1006);
  s.send({ type: "1" }, { queue: true });
  s.send({ type: "2" }, { queue: true });
  assert.equal(s.send({ type: "3" }, { queue: true }), false);
  assert.deepEqual(unsent, [{ message: { type: "3" }, reason: "queue_full" }]);
});

test("a final close reports what was queued, and later sends are refused", () => {
  const s = connected();
  const unsent = record(s, "unsent");
  last().drop(1006);
  s.send({ type: "waiting" }, { queue: true });
  mock.timers.tick(500);
  last().drop(4001); // the reconnect found the session over
  assert.deepEqual(unsent, [{ message: { type: "waiting" }, reason: "ended" }]);
  assert.equal(s.send({ type: "late" }, { queue: true }), false);
  assert.equal(unsent.at(-1).reason, "ended");
});

test("binary frames (live audio) are never queued: refused and reported", () => {
  const s = connected();
  const unsent = record(s, "unsent");
  last().drop(1006);
  const frame = new Uint8Array([1, 2]).buffer;
  assert.equal(s.sendBinary(frame), false);
  assert.equal(unsent[0].reason, "disconnected");
  assert.equal(s.queued, 0);
});

test("the heartbeat pings only while open", () => {
  const s = connected({ heartbeatMs: 1000 });
  mock.timers.tick(1000);
  assert.deepEqual(sentTypes(last()), ["ping"]);
  last().drop(1006);
  mock.timers.tick(400); // the reconnect is pending: no ping, no error
  assert.equal(s.open, false);
});
