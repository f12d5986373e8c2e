// node --test tests/js/
import { test } from "node:test";
import assert from "node:assert/strict";
import { VideoChatSession } from "../../../static/videochat/js/session.js";
import { FakeSocket, tick } from "./fakes.mjs";

class FakePeer extends EventTarget {
  constructor(opts) { super(); this.opts = opts; this.signals = []; this.closed = false; }
  handleSignal(s) { this.signals.push(s); }
  close() { this.closed = true; }
}

const SETTINGS = { gender: "m", wantGender: "f", wantCountry: "DE", language: "en", translateTo: "de" };
const CLIENT = { browser: "Chrome 156", os: "Linux", cameras: 1, microphones: 1, timezone: "UTC", language: "en" };

function setup() {
  const socket = new FakeSocket();
  const peers = [];
  const session = new VideoChatSession({
    socket,
    clientInfo: async () => CLIENT,
    createPeer: (opts) => { const p = new FakePeer(opts); peers.push(p); return p; },
  });
  const events = [];
  for (const t of ["state", "ready", "waiting", "matched", "peer", "unmatched", "chat", "error"]) {
    session.addEventListener(t, (e) => events.push([t, e.detail]));
  }
  return { socket, session, peers, events };
}

async function matched(ctx, matchId = "m1", role = "offer") {
  await ctx.session.start(SETTINGS);
  ctx.socket.receive({ type: "ready", me: { country: "DE" }, filters_allowed: true, ice_servers: [{ urls: "stun:x" }] });
  ctx.socket.receive({ type: "queue.waiting", expected_wait_s: 3.5 });
  ctx.socket.receive({ type: "match.found", match_id: matchId, role, partner: { country: "FR", flag: "🇫🇷" } });
}

test("starts idle", () => {
  const { session } = setup();
  assert.equal(session.state, "idle");
});

test("start sends hello with the settings and client info, then joins on ready", async () => {
  const { socket, session, events } = setup();
  await session.start(SETTINGS);
  assert.equal(session.state, "waiting");
  assert.deepEqual(socket.sent, [{
    type: "hello", client: CLIENT, gender: "m", want_gender: "f", want_country: "DE",
    language: "en", translate_to: "de",
  }]);
  socket.receive({ type: "ready", me: { country: "DE" }, filters_allowed: false, ice_servers: [] });
  assert.deepEqual(socket.types(), ["hello", "queue.join"]);
  assert.deepEqual(events.find(([t]) => t === "ready")[1], { me: { country: "DE" }, filtersAllowed: false });
});

test("no filters are sent as null", async () => {
  const { socket, session } = setup();
  await session.start({ gender: "", wantGender: "", wantCountry: "", language: "fr", translateTo: "" });
  const hello = socket.last("hello");
  assert.equal(hello.want_gender, null);
  assert.equal(hello.want_country, null);
  assert.equal(hello.translate_to, "");
});

test("a second ready (settings changed in the queue) does not join twice", async () => {
  const { socket, session } = setup();
  await session.start(SETTINGS);
  socket.receive({ type: "ready", filters_allowed: true, ice_servers: [] });
  await session.updateSettings({ ...SETTINGS, translateTo: "fr" });
  socket.receive({ type: "ready", filters_allowed: true, ice_servers: [] });
  assert.deepEqual(socket.types(), ["hello", "queue.join", "hello"]);
  assert.equal(socket.last("hello").translate_to, "fr");
});

test("queue.waiting reports the expected wait", async () => {
  const { socket, session, events } = setup();
  await session.start(SETTINGS);
  socket.receive({ type: "queue.waiting", expected_wait_s: null });
  assert.deepEqual(events.filter(([t]) => t === "waiting").map(([, d]) => d), [{ expectedWaitS: null }]);
});

test("match.found makes a peer with the role and ICE servers; its signals carry the match id", async () => {
  const ctx = setup();
  await matched(ctx, "m1", "answer");
  assert.equal(ctx.session.state, "matched");
  assert.equal(ctx.session.matchId, "m1");
  assert.equal(ctx.peers.length, 1);
  assert.equal(ctx.peers[0].opts.role, "answer");
  assert.deepEqual(ctx.peers[0].opts.iceServers, [{ urls: "stun:x" }]);
  ctx.peers[0].opts.sendSignal({ kind: "offer", data: { type: "offer", sdp: "s" } });
  assert.deepEqual(ctx.socket.last("signal"), { type: "signal", match_id: "m1", kind: "offer", data: { type: "offer", sdp: "s" } });
  const m = ctx.events.find(([t]) => t === "matched")[1];
  assert.deepEqual(m, { matchId: "m1", role: "answer", partner: { country: "FR", flag: "🇫🇷" } });
});

test("signals reach the peer only for the current match", async () => {
  const ctx = setup();
  await matched(ctx);
  ctx.socket.receive({ type: "signal", match_id: "old", kind: "ice", data: { candidate: "x" } });
  ctx.socket.receive({ type: "signal", match_id: "m1", kind: "answer", data: { type: "answer", sdp: "a" } });
  assert.deepEqual(ctx.peers[0].signals, [{ kind: "answer", data: { type: "answer", sdp: "a" } }]);
});

test("next tears the peer down and goes back to waiting", async () => {
  const ctx = setup();
  await matched(ctx);
  ctx.session.next();
  assert.ok(ctx.peers[0].closed);
  assert.equal(ctx.session.state, "waiting");
  assert.equal(ctx.session.matchId, null);
  assert.deepEqual(ctx.socket.sent.at(-1), { type: "next", match_id: "m1" });
  assert.deepEqual(ctx.events.filter(([t]) => t === "unmatched").map(([, d]) => d), [{ matchId: "m1", reason: "next" }]);
  ctx.socket.receive({ type: "match.found", match_id: "m2", role: "offer", partner: {} });
  assert.equal(ctx.session.state, "matched");
  assert.equal(ctx.peers.length, 2);
});

test("next does nothing unless matched", async () => {
  const ctx = setup();
  ctx.session.next();
  await ctx.session.start(SETTINGS);
  ctx.session.next();
  assert.deepEqual(ctx.socket.types(), ["hello"]);
});

for (const reason of ["next", "left", "disconnected"]) {
  test(`match.ended (${reason}): the peer is torn down; the server re-queued us`, async () => {
    const ctx = setup();
    await matched(ctx);
    const sentBefore = ctx.socket.sent.length;
    ctx.socket.receive({ type: "match.ended", match_id: "m1", reason });
    assert.ok(ctx.peers[0].closed);
    assert.equal(ctx.session.state, "waiting");
    assert.equal(ctx.socket.sent.length, sentBefore);
    assert.deepEqual(ctx.events.filter(([t]) => t === "unmatched").at(-1)[1], { matchId: "m1", reason });
    ctx.socket.receive({ type: "queue.waiting", expected_wait_s: 2 });
    ctx.socket.receive({ type: "match.found", match_id: "m2", role: "answer", partner: {} });
    assert.equal(ctx.session.state, "matched");
  });
}

test("match.ended of another match is ignored", async () => {
  const ctx = setup();
  await matched(ctx);
  ctx.socket.receive({ type: "match.ended", match_id: "zzz", reason: "left" });
  assert.equal(ctx.session.state, "matched");
  assert.ok(!ctx.peers[0].closed);
});

test("stop leaves the queue and ends; a late match is declined", async () => {
  const ctx = setup();
  await matched(ctx);
  ctx.session.stop();
  assert.equal(ctx.session.state, "ended");
  assert.ok(ctx.peers[0].closed);
  assert.equal(ctx.socket.sent.at(-1).type, "queue.leave");
  ctx.socket.receive({ type: "queue.waiting", expected_wait_s: 1 });
  assert.equal(ctx.session.state, "ended");
  ctx.socket.receive({ type: "match.found", match_id: "late", role: "offer", partner: {} });
  assert.equal(ctx.session.state, "ended");
  assert.equal(ctx.peers.length, 1);
  assert.equal(ctx.socket.sent.at(-1).type, "queue.leave");
  // Start again from ended.
  await ctx.session.start(SETTINGS);
  assert.equal(ctx.session.state, "waiting");
});

test("chat: sends trimmed text for the match; keeps the lines this user saw for a report", async () => {
  const ctx = setup();
  assert.equal(ctx.session.sendChat("too early"), false);
  await matched(ctx);
  assert.equal(ctx.session.sendChat("   "), false);
  assert.equal(ctx.session.sendChat("  hallo  "), true);
  assert.deepEqual(ctx.socket.last("chat"), { type: "chat", match_id: "m1", text: "hallo" });
  assert.equal(ctx.session.sendChat("x".repeat(600)), true);
  assert.equal(ctx.socket.last("chat").text.length, 500);
  ctx.socket.receive({ type: "chat", match_id: "m1", from: "me", text: "hallo", lang: "de", translation: "hello" });
  ctx.socket.receive({ type: "chat", match_id: "m1", from: "partner", text: "hi", lang: "en", translation: null });
  ctx.socket.receive({ type: "chat", match_id: "other", from: "partner", text: "stray" });
  assert.deepEqual(ctx.events.filter(([t]) => t === "chat").map(([, d]) => d.line), [
    { from: "me", text: "hallo", lang: "de", translation: "hello" },
    { from: "partner", text: "hi", lang: "en", translation: null },
  ]);
  // The last partner's lines stay reportable after the match ends, until the next match.
  ctx.session.next();
  assert.deepEqual(ctx.session.reportableChat(), [{ from: "me", text: "hallo" }, { from: "partner", text: "hi" }]);
  ctx.socket.receive({ type: "match.found", match_id: "m2", role: "offer", partner: {} });
  assert.deepEqual(ctx.session.reportableChat(), []);
});

test("after a reconnect the session says hello again and re-queues", async () => {
  const ctx = setup();
  await matched(ctx);
  ctx.socket.dispatchEvent(new Event("open"));
  await tick();
  assert.ok(ctx.peers[0].closed);
  assert.equal(ctx.session.state, "waiting");
  assert.equal(ctx.socket.sent.at(-1).type, "hello");
  ctx.socket.receive({ type: "ready", filters_allowed: true, ice_servers: [] });
  assert.equal(ctx.socket.sent.at(-1).type, "queue.join");
});

test("error frames are passed on", () => {
  const ctx = setup();
  ctx.socket.receive({ type: "error", code: "invalid", detail: "text: too long" });
  assert.deepEqual(ctx.events.at(-1), ["error", { code: "invalid", detail: "text: too long" }]);
});

test("a hello refused for its filters is said again without them, then the queue is joined", async () => {
  const ctx = setup();
  await ctx.session.start(SETTINGS);
  ctx.socket.receive({ type: "error", code: "filters_not_allowed", detail: "gender and country filters are paid" });
  assert.equal(ctx.session.wantQueue, true); // still waiting for a "ready"
  await ctx.session.updateSettings({ ...SETTINGS, wantGender: "", wantCountry: "" });
  const hello = ctx.socket.last("hello");
  assert.equal(hello.want_gender, null);
  assert.equal(hello.want_country, null);
  ctx.socket.receive({ type: "ready", filters_allowed: false, ice_servers: [] });
  assert.deepEqual(ctx.socket.types(), ["hello", "hello", "queue.join"]);
});
