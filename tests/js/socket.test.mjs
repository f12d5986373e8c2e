// node --test tests/js/: LiveSocket's reconnect rules, with a stand-in for the browser's
// WebSocket (node has none to open against our server here).
import { test, mock } from "node:test";
import assert from "node:assert/strict";

class FakeWebSocket {
  static OPEN = 1;
  static made = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    FakeWebSocket.made.push(this);
  }
  send() {}
  close() {}
  open() { this.readyState = 1; this.onopen?.(); }
  drop(code) { this.readyState = 3; this.onclose?.({ code }); }
}

globalThis.WebSocket = FakeWebSocket;
globalThis.location = { protocol: "https:", host: "example.test" };
const { LiveSocket, wsUrl } = await import("../../static/shared/js/socket.js");

test("wsUrl follows the page's scheme and host", () => {
  assert.equal(wsUrl("/ws/cbline/", { device: "d1", none: null }), "wss://example.test/ws/cbline/?device=d1");
});

test("a dropped connection reconnects with backoff and is not ended", () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
  try {
    FakeWebSocket.made = [];
    const s = new LiveSocket("/ws/x/").connect();
    const closes = [];
    s.addEventListener("close", (e) => closes.push(e.detail));
    FakeWebSocket.made[0].open();
    FakeWebSocket.made[0].drop(1006);
    assert.deepEqual(closes, [{ code: 1006, final: false }]);
    assert.equal(s.ended, false);
    mock.timers.tick(499);
    assert.equal(FakeWebSocket.made.length, 1);
    mock.timers.tick(1);
    assert.equal(FakeWebSocket.made.length, 2);
  } finally {
    mock.timers.reset();
  }
});

for (const code of [4001, 4401, 4403]) {
  test(`close code ${code} (the server ended the session) is final: no reconnect`, () => {
    mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
    try {
      FakeWebSocket.made = [];
      const s = new LiveSocket("/ws/x/").connect();
      FakeWebSocket.made[0].open();
      FakeWebSocket.made[0].drop(code);
      assert.equal(s.ended, true);
      mock.timers.tick(60_000);
      assert.equal(FakeWebSocket.made.length, 1);
    } finally {
      mock.timers.reset();
    }
  });
}
