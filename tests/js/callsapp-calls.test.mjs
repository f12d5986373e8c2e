// node --test tests/js/: the CallsApp call manager's rules for what rings and what ends a call
// (static/messaging/js/calls.js), on the signalling alone: the media side runs in the
// browser tests (tests/e2e/test_callsapp_calls.py).
import { test } from "node:test";
import assert from "node:assert/strict";

import { CallManager, INVITE_LIFETIME_MS } from "../../static/messaging/js/calls.js";

const ME = "@1:test";
const IDA = "@2:test";
const PIA = "@3:test";
const OFFER = { type: "offer", sdp: "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" };

function manager() {
  const sent = [];
  const client = {
    userId: ME,
    deviceId: "MYDEVICE",
    sendCallEvent: async (roomId, type, content) => sent.push({ roomId, type, content }),
  };
  const calls = new CallManager(client);
  return { calls, sent, settled: () => calls.sending };
}

function invite(callId, { sender = IDA, ts = Date.now(), roomId = "!r:test" } = {}) {
  return { roomId, sender, type: "m.call.invite", ts, content: { call_id: callId, party_id: "IDAPHONE", version: "1", lifetime: INVITE_LIFETIME_MS, offer: OFFER } };
}

function end(call) {
  clearTimeout(call.timer);
}

test("an invite rings, as a voice call when the offer has no video", () => {
  const { calls } = manager();
  calls.onEvent(invite("c1"));
  assert.equal(calls.call.state, "ringing");
  assert.equal(calls.call.direction, "in");
  assert.equal(calls.call.peer, IDA);
  assert.equal(calls.call.video, false);
  end(calls.call);
});

test("an invite older than its lifetime (a device that was offline) does not ring", () => {
  const { calls } = manager();
  calls.onEvent(invite("c1", { ts: Date.now() - INVITE_LIFETIME_MS - 1 }));
  assert.equal(calls.call, null);
});

test("my own invite, seen on my other device, does not ring there", () => {
  const { calls } = manager();
  calls.onEvent(invite("c1", { sender: ME }));
  assert.equal(calls.call, null);
});

test("a second caller is told busy and the first call goes on", async () => {
  const { calls, sent, settled } = manager();
  calls.onEvent(invite("c1"));
  calls.onEvent(invite("c2", { sender: PIA, roomId: "!pia:test" }));
  await settled();
  assert.equal(calls.call.id, "c1");
  assert.deepEqual(
    sent.map((e) => [e.roomId, e.type, e.content.call_id, e.content.reason]),
    [["!pia:test", "m.call.hangup", "c2", "user_busy"]],
  );
  // The same invite again (a redelivery) is the call already ringing, not a busy one.
  calls.onEvent(invite("c1"));
  await settled();
  assert.equal(sent.length, 1);
  end(calls.call);
});

test("my other device answering stops this one ringing", () => {
  const { calls } = manager();
  calls.onEvent(invite("c1"));
  const call = calls.call;
  calls.onEvent({ roomId: "!r:test", sender: ME, type: "m.call.answer", ts: Date.now(), content: { call_id: "c1", party_id: "MYLAPTOP" } });
  assert.equal(call.state, "ended");
  assert.equal(call.reason, "answered_elsewhere");
  assert.equal(calls.call, null);
});

test("declining tells the caller and ends the call here", async () => {
  const { calls, sent, settled } = manager();
  calls.onEvent(invite("c1"));
  const call = calls.call;
  calls.hangup(); // while it rings, hanging up is declining
  await settled();
  assert.equal(call.reason, "declined");
  assert.deepEqual(sent.map((e) => [e.type, e.content.call_id, e.content.party_id]), [["m.call.reject", "c1", "MYDEVICE"]]);
});

test("the caller hanging up before an answer ends the ringing", () => {
  const { calls } = manager();
  calls.onEvent(invite("c1"));
  const call = calls.call;
  calls.onEvent({ roomId: "!r:test", sender: IDA, type: "m.call.hangup", ts: Date.now(), content: { call_id: "c1", party_id: "IDAPHONE", reason: "user_hangup" } });
  assert.equal(call.state, "ended");
  assert.equal(calls.call, null);
});

test("events of another call, or from a party other than the caller's, change nothing", () => {
  const { calls } = manager();
  calls.onEvent(invite("c1"));
  calls.onEvent({ roomId: "!r:test", sender: IDA, type: "m.call.hangup", ts: Date.now(), content: { call_id: "other", reason: "user_hangup" } });
  calls.onEvent({ roomId: "!r:test", sender: IDA, type: "m.call.hangup", ts: Date.now(), content: { call_id: "c1", party_id: "IDALAPTOP", reason: "user_hangup" } });
  assert.equal(calls.call.state, "ringing");
  end(calls.call);
});

test("two people calling each other at once end up in one call: the lower id's", async () => {
  // Ours ("b") loses to theirs ("a"): ours is dropped (they are told), theirs is taken.
  const { calls, sent, settled } = manager();
  const ours = calls.newCall({ id: "b", roomId: "!r:test", peer: IDA, direction: "out", video: false, state: "ringing" });
  let accepted = null;
  calls.accept = async () => { accepted = calls.call; };
  calls.onEvent(invite("a"));
  await settled();
  assert.equal(ours.state, "ended");
  assert.equal(ours.reason, "replaced");
  assert.equal(calls.call.id, "a");
  assert.equal(accepted, calls.call);
  assert.deepEqual(sent.map((e) => [e.type, e.content.call_id, e.content.reason]), [["m.call.hangup", "b", "replaced"]]);
  end(calls.call);

  // Ours ("a") wins over theirs ("b"): theirs is ignored, not answered busy; they take ours.
  const other = manager();
  const mine = other.calls.newCall({ id: "a", roomId: "!r:test", peer: IDA, direction: "out", video: false, state: "ringing" });
  other.calls.onEvent(invite("b"));
  await other.settled();
  assert.equal(other.calls.call, mine);
  assert.equal(mine.state, "ringing");
  assert.deepEqual(other.sent, []);
});

test("someone else calling while my call rings elsewhere gets busy, not glare", async () => {
  const { calls, sent, settled } = manager();
  calls.newCall({ id: "z", roomId: "!r:test", peer: IDA, direction: "out", video: false, state: "ringing" });
  calls.onEvent(invite("a", { sender: PIA, roomId: "!pia:test" }));
  await settled();
  assert.equal(calls.call.id, "z");
  assert.deepEqual(sent.map((e) => [e.type, e.content.call_id, e.content.reason]), [["m.call.hangup", "a", "user_busy"]]);
});
