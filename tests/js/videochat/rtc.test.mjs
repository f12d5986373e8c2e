// node --test tests/js/
import { test } from "node:test";
import assert from "node:assert/strict";
import { PeerSession } from "../../../static/videochat/js/rtc.js";
import { FakePC, tick } from "./fakes.mjs";

function makePeer(role, extra = {}) {
  const signals = [];
  const localStream = { getTracks: () => ["audio-track", "video-track"] };
  const peer = new PeerSession({
    role, iceServers: [{ urls: "stun:example.test" }], localStream,
    sendSignal: (s) => signals.push(s), RTCPeerConnectionImpl: FakePC,
    MediaStreamImpl: class { constructor() { this.tracks = []; } addTrack(t) { this.tracks.push(t); } },
    ...extra,
  });
  return { peer, pc: peer.pc, signals };
}

test("uses the given ICE servers and adds the local tracks", () => {
  const { pc } = makePeer("offer");
  assert.deepEqual(pc.config, { iceServers: [{ urls: "stun:example.test" }] });
  assert.deepEqual(pc.tracks.map((t) => t.track), ["audio-track", "video-track"]);
});

test("rejects an unknown role", () => {
  assert.throws(() => makePeer("caller"), /unknown role/);
});

test("the offerer sends an offer when negotiation is needed", async () => {
  const { pc, signals } = makePeer("offer");
  await pc.onnegotiationneeded();
  assert.deepEqual(signals, [{ kind: "offer", data: { type: "offer", sdp: "sdp-offer" } }]);
  assert.equal(pc.signalingState, "have-local-offer");
});

test("the answerer does not open the first negotiation, and answers an offer", async () => {
  const { peer, pc, signals } = makePeer("answer");
  await pc.onnegotiationneeded();
  assert.deepEqual(signals, []);
  await peer.handleSignal({ kind: "offer", data: { type: "offer", sdp: "remote" } });
  assert.deepEqual(signals, [{ kind: "answer", data: { type: "answer", sdp: "sdp-answer" } }]);
  assert.equal(pc.signalingState, "stable");
});

test("remote candidates wait until the remote description is set, then apply in order", async () => {
  const { peer, pc } = makePeer("answer");
  await peer.handleSignal({ kind: "ice", data: { candidate: "c1" } });
  await peer.handleSignal({ kind: "ice", data: { candidate: "c2" } });
  assert.deepEqual(pc.candidates, []);
  assert.equal(peer.pendingCandidates.length, 2);
  await peer.handleSignal({ kind: "offer", data: { type: "offer", sdp: "remote" } });
  assert.deepEqual(pc.candidates, [{ candidate: "c1" }, { candidate: "c2" }]);
  await peer.handleSignal({ kind: "ice", data: { candidate: "c3" } });
  assert.deepEqual(pc.candidates.at(-1), { candidate: "c3" });
});

test("signals sent back to back are handled one at a time", async () => {
  const { peer, pc } = makePeer("answer");
  // Not awaited: the candidate must still wait for the offer that was sent before it.
  peer.handleSignal({ kind: "offer", data: { type: "offer", sdp: "remote" } });
  const done = peer.handleSignal({ kind: "ice", data: { candidate: "c1" } });
  await done;
  assert.deepEqual(pc.candidates, [{ candidate: "c1" }]);
  assert.deepEqual(peer.pendingCandidates, []);
});

test("glare: the impolite offerer ignores a colliding offer", async () => {
  const { peer, pc, signals } = makePeer("offer");
  await pc.onnegotiationneeded();
  await peer.handleSignal({ kind: "answer", data: { type: "answer", sdp: "first" } });
  // Both sides renegotiate at once.
  await pc.onnegotiationneeded();
  await peer.handleSignal({ kind: "offer", data: { type: "offer", sdp: "theirs" } });
  assert.equal(pc.remoteDescription.sdp, "first");
  assert.equal(signals.length, 2); // our two offers, no answer
  // Candidates of the ignored offer may fail without an error.
  pc.failCandidates = true;
  const errors = [];
  peer.addEventListener("error", (e) => errors.push(e.detail));
  await peer.handleSignal({ kind: "ice", data: { candidate: "x" } });
  assert.deepEqual(errors, []);
});

test("a bad remote candidate outside glare is reported as an error", async () => {
  const { peer, pc } = makePeer("answer");
  await peer.handleSignal({ kind: "offer", data: { type: "offer", sdp: "remote" } });
  pc.failCandidates = true;
  const errors = [];
  peer.addEventListener("error", (e) => errors.push(e.detail.message));
  await peer.handleSignal({ kind: "ice", data: { candidate: "x" } });
  assert.deepEqual(errors, ["bad candidate"]);
});

test("glare: the polite answerer rolls back its own offer and answers", async () => {
  const { peer, pc, signals } = makePeer("answer");
  peer.remoteSeen = true; // a renegotiation after the first exchange
  await pc.onnegotiationneeded();
  assert.equal(pc.signalingState, "have-local-offer");
  await peer.handleSignal({ kind: "offer", data: { type: "offer", sdp: "theirs" } });
  assert.ok(pc.calls.includes("rollback"));
  assert.deepEqual(signals.at(-1), { kind: "answer", data: { type: "answer", sdp: "sdp-answer" } });
});

test("local ICE candidates are signalled, the end-of-candidates null is not", () => {
  const { pc, signals } = makePeer("offer");
  pc.onicecandidate({ candidate: { toJSON: () => ({ candidate: "a", sdpMid: "0" }) } });
  pc.onicecandidate({ candidate: null });
  assert.deepEqual(signals, [{ kind: "ice", data: { candidate: "a", sdpMid: "0" } }]);
});

test("remote tracks are emitted once per stream", () => {
  const { peer, pc } = makePeer("offer");
  const got = [];
  peer.addEventListener("remotestream", (e) => got.push(e.detail));
  const stream = { id: "s" };
  pc.ontrack({ track: "a", streams: [stream] });
  pc.ontrack({ track: "v", streams: [stream] });
  assert.deepEqual(got, [stream]);
});

test("a track without a stream is gathered into one", () => {
  const { peer, pc } = makePeer("offer");
  const got = [];
  peer.addEventListener("remotestream", (e) => got.push(e.detail));
  pc.ontrack({ track: "a", streams: [] });
  pc.ontrack({ track: "v", streams: [] });
  assert.equal(got.length, 1);
  assert.deepEqual(got[0].tracks, ["a", "v"]);
});

test("inbound video bytes come from inbound-rtp video stats", async () => {
  const { peer } = makePeer("offer");
  assert.equal(await peer.inboundVideoBytes(), 4200);
});

test("close() closes the connection, emits closed, and ignores later signals", async () => {
  const { peer, pc, signals } = makePeer("answer");
  const states = [];
  peer.addEventListener("state", (e) => states.push(e.detail));
  peer.close();
  peer.close();
  assert.ok(pc.closed);
  assert.deepEqual(states, ["closed"]);
  await peer.handleSignal({ kind: "offer", data: { type: "offer", sdp: "late" } });
  await tick();
  assert.equal(pc.remoteDescription, null);
  assert.deepEqual(signals, []);
  assert.equal(await peer.inboundVideoBytes(), 0);
});
