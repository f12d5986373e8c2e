// node --test tests/js/: the WebRTC plumbing both products share (static/shared/js/peer.js),
// driven with a recording stand-in for the browser's RTCPeerConnection; the real one runs in
// the browser tests (tests/e2e/test_videochat.py, test_callsapp_calls.py, test_turn_relay.py).
import { test } from "node:test";
import assert from "node:assert/strict";
import { PeerConnection } from "../../static/shared/js/peer.js";
import { FakePC } from "./videochat/fakes.mjs";

class FakeStream {
  constructor() { this.tracks = []; }
  addTrack(t) { this.tracks.push(t); }
}

function makePeer(extra = {}) {
  const localStream = { getTracks: () => ["audio-track", "video-track"] };
  const peer = new PeerConnection({
    iceServers: [{ urls: "turn:example.test", username: "u", credential: "p" }], localStream,
    RTCPeerConnectionImpl: FakePC, MediaStreamImpl: FakeStream, ...extra,
  });
  return { peer, pc: peer.pc };
}

function record(peer, type) {
  const got = [];
  peer.addEventListener(type, (e) => got.push(e.detail));
  return got;
}

test("the connection gets the given ICE servers and the local tracks, with their stream", () => {
  const { pc } = makePeer();
  assert.deepEqual(pc.config, { iceServers: [{ urls: "turn:example.test", username: "u", credential: "p" }] });
  assert.deepEqual(pc.tracks.map((t) => t.track), ["audio-track", "video-track"]);
  assert.ok(pc.tracks.every((t) => t.stream.getTracks));
});

test("describeLocal makes the offer, or the answer once a remote offer is set", async () => {
  const offerer = makePeer();
  assert.deepEqual(await offerer.peer.describeLocal(), { type: "offer", sdp: "sdp-offer" });
  const answerer = makePeer();
  await answerer.peer.acceptRemote({ type: "offer", sdp: "remote" });
  assert.deepEqual(await answerer.peer.describeLocal(), { type: "answer", sdp: "sdp-answer" });
  assert.equal(answerer.pc.signalingState, "stable");
});

test("remote candidates wait for the remote description, then apply in order", async () => {
  const { peer, pc } = makePeer();
  await peer.addRemoteCandidate({ candidate: "c1" });
  await peer.addRemoteCandidate({ candidate: "c2" });
  assert.deepEqual(pc.candidates, []);
  await peer.acceptRemote({ type: "answer", sdp: "remote" });
  assert.deepEqual(pc.candidates, [{ candidate: "c1" }, { candidate: "c2" }]);
  await peer.addRemoteCandidate({ candidate: "c3" });
  assert.deepEqual(pc.candidates, [{ candidate: "c1" }, { candidate: "c2" }, { candidate: "c3" }]);
  assert.deepEqual(peer.pendingCandidates, []);
});

test("a refused candidate is an error, unless stale ones were declared harmless", async () => {
  const strict = makePeer();
  await strict.peer.acceptRemote({ type: "answer", sdp: "remote" });
  strict.pc.failCandidates = true;
  await assert.rejects(strict.peer.addRemoteCandidate({ candidate: "x" }), /bad candidate/);

  const lenient = makePeer({ ignoreCandidateErrors: true });
  await lenient.peer.addRemoteCandidate({ candidate: "x" });
  await lenient.peer.addRemoteCandidate({ candidate: "y" });
  lenient.pc.failCandidates = true;
  await lenient.peer.acceptRemote({ type: "answer", sdp: "remote" }); // does not throw
  lenient.pc.failCandidates = false;
  await lenient.peer.addRemoteCandidate({ candidate: "z" });
  assert.deepEqual(lenient.pc.candidates, [{ candidate: "z" }]);
});

test("local candidates are emitted as JSON, the end-of-candidates null is not", () => {
  const { peer, pc } = makePeer();
  const got = record(peer, "candidate");
  pc.onicecandidate({ candidate: { toJSON: () => ({ candidate: "a", sdpMid: "0" }) } });
  pc.onicecandidate({ candidate: null });
  assert.deepEqual(got, [{ candidate: "a", sdpMid: "0" }]);
});

test("the remote stream is emitted once per stream; tracks without one are gathered", () => {
  const { peer, pc } = makePeer();
  const got = record(peer, "remotestream");
  const stream = { id: "s" };
  pc.ontrack({ track: "a", streams: [stream] });
  pc.ontrack({ track: "v", streams: [stream] });
  assert.deepEqual(got, [stream]);
  assert.equal(peer.remoteStream, stream);

  const bare = makePeer();
  const bareGot = record(bare.peer, "remotestream");
  bare.pc.ontrack({ track: "a", streams: [] });
  bare.pc.ontrack({ track: "v", streams: [] });
  assert.equal(bareGot.length, 1);
  assert.deepEqual(bareGot[0].tracks, ["a", "v"]);
});

test("connection state changes are emitted", () => {
  const { peer, pc } = makePeer();
  const got = record(peer, "state");
  pc.connectionState = "connected";
  pc.onconnectionstatechange();
  assert.equal(peer.connectionState, "connected");
  assert.deepEqual(got, ["connected"]);
});

test("close() closes once, emits closed, and drops later candidates", async () => {
  const { peer, pc } = makePeer();
  const states = record(peer, "state");
  const candidates = record(peer, "candidate");
  await peer.addRemoteCandidate({ candidate: "early" });
  peer.close();
  peer.close();
  assert.ok(pc.closed);
  assert.deepEqual(states, ["closed"]);
  assert.equal(pc.onicecandidate, null);
  await peer.addRemoteCandidate({ candidate: "late" });
  assert.deepEqual(peer.pendingCandidates, []);
  assert.deepEqual(candidates, []);
});
