// node --test tests/js/ — the CBLINE jitter buffer (static/voice/js/media/jitter-worklet.js)
// driven block by block with a stand-in for the AudioWorklet global scope: exact, no timers.
import { test } from "node:test";
import assert from "node:assert/strict";

const RATE = 48000;
const BLOCK = 128;
const MS = RATE / 1000;
let Processor = null;
globalThis.sampleRate = RATE;
globalThis.currentFrame = 0;
globalThis.currentTime = 0;
globalThis.AudioWorkletProcessor = class {
  constructor() {
    this.port = { sent: [], postMessage(m) { this.sent.push(m); }, onmessage: null };
  }
};
globalThis.registerProcessor = (name, cls) => { if (name === "cbline-jitter") Processor = cls; };
await import("../../static/voice/js/media/jitter-worklet.js");

function make() {
  globalThis.currentFrame = 0;
  globalThis.currentTime = 0;
  const p = new Processor();
  const send = (msg) => p.port.onmessage({ data: msg });
  const out = [];
  const run = (ms, input = null) => {
    const blocks = Math.round((ms * MS) / BLOCK);
    for (let b = 0; b < blocks; b++) {
      const o = new Float32Array(BLOCK);
      const inputs = input ? [[input(globalThis.currentFrame)]] : [[]];
      p.process(inputs, [[o]]);
      out.push(...o);
      globalThis.currentFrame += BLOCK;
      globalThis.currentTime = globalThis.currentFrame / RATE;
    }
  };
  // A frame is a whole packet unless told otherwise (the Player says its stream's packet size).
  const frame = (key, ms, value = 0.5, live = true, packetMs = ms) => send({
    type: "frame", key, live, packet: packetMs * MS, samples: new Float32Array(ms * MS).fill(value),
  });
  const messages = (type) => p.port.sent.filter((m) => m.type === type);
  const stats = () => { send({ type: "stats", id: 1 }); return messages("stats").at(-1).stats; };
  return { p, send, run, frame, out, messages, stats };
}

const firstNonZero = (arr) => arr.findIndex((v) => v !== 0);

test("playback starts once buffered + waited reaches the 60 ms target", () => {
  const j = make();
  j.frame("tx:1", 40); // one 40 ms packet
  j.run(60);
  const start = firstNonZero(j.out);
  // 20 ms of waiting (40 buffered + 20 waited = 60), rounded up to the 128-sample block.
  assert.ok(start >= 20 * MS && start < 20 * MS + BLOCK, `started at sample ${start}`);
  const started = j.messages("started");
  assert.equal(started.length, 1);
  assert.equal(started[0].key, "tx:1");
  assert.ok(Math.abs(started[0].contextTime * RATE - start) < 1);
});

test("a packet already deep enough starts at once", () => {
  const j = make();
  j.frame("tx:1", 40);
  j.frame("tx:1", 40);
  j.run(10);
  assert.equal(firstNonZero(j.out), 0);
});

test("an underrun is counted, grows the target, and is faded rather than cut", () => {
  const j = make();
  j.frame("tx:1", 40);
  j.frame("tx:1", 40);
  j.run(80 + 100); // plays 80 ms, then runs dry
  const s = j.stats();
  assert.equal(s.underruns, 1);
  assert.equal(s.targetMs, 70); // 40 ms packets + 20 ms margin + one 10 ms step
  assert.equal(s.state, "rebuffering");
  const tail = j.out.slice(80 * MS);
  assert.ok(tail[10] > 0 && tail[10] < 0.5, "concealment fades the last frame");
  assert.ok(tail.slice(60 * MS).every((v) => v === 0), "then silence");
  // Frames arriving while it waits are late; playback resumes at the new target.
  j.frame("tx:1", 40);
  assert.equal(j.stats().lateFrames, 1);
  j.frame("tx:1", 40);
  j.run(20);
  assert.equal(j.stats().state, "playing");
});

test("target is capped at 100 ms: later packets are concealed, not waited for", () => {
  // Ten 20 ms packets at once every 200 ms: the first of each burst is 180 ms late.
  const j = make();
  stream(j, { seconds: 4, delayMs: (k) => 180 - 20 * (k % 10) });
  const s = j.stats();
  assert.equal(s.targetMs, 100);
  assert.equal(s.marginMs, 80);
});

test("a lost packet is concealed in place: no underrun, the timeline kept", () => {
  // Everything at once (a replay, or a deep buffer): the gap is filled before it is reached.
  const j = make();
  j.frame("r", 40, 0.5, false);
  j.frame("r", 40, 0.5, false);
  j.send({ type: "gap", key: "r", samples: 40 * MS });
  j.frame("r", 40, 0.25, false);
  j.send({ type: "end", key: "r" });
  j.run(200);
  const s = j.stats();
  assert.equal(s.underruns, 0);
  assert.equal(s.concealedSamples, 40 * MS);
  assert.equal(s.playedSamples, 160 * MS);
  const start = firstNonZero(j.out);
  const hole = j.out.slice(start + 80 * MS, start + 120 * MS);
  assert.equal(hole[0], 0.25, "repeats the last frame at half level");
  assert.ok(hole.at(-1) > 0 && hole.at(-1) < 0.1, "fading out");
  assert.equal(j.out[start + 120 * MS], 0.25, "then the next packet, on time");
});

test("a loss noticed only after the buffer ran dry: concealment, not an underrun", () => {
  // Live at 40 ms a packet: A, B, (C lost), D. With a 20 ms margin playback runs dry 20 ms
  // before D arrives and says C is missing.
  const j = make();
  j.frame("tx:1", 40, 0.5); // A at 0 ms
  j.run(40);
  j.frame("tx:1", 40, 0.5); // B at 40 ms
  j.run(80); // C's slot passes; dry from 100 ms
  assert.equal(j.stats().state, "rebuffering");
  j.send({ type: "gap", key: "tx:1", samples: 40 * MS }); // D at 120 ms
  j.frame("tx:1", 40, 0.25);
  j.send({ type: "end", key: "tx:1" });
  j.run(100);
  const s = j.stats();
  assert.equal(s.underruns, 0);
  assert.equal(s.targetMs, 60);
  assert.equal(s.concealedSamples, 40 * MS);
  const start = firstNonZero(j.out);
  const d = j.out.indexOf(0.25, start + 80 * MS + 1);
  // D is heard 40 ms of concealment after B's end, within a block of where C should have been.
  assert.ok(Math.abs(d - (start + 120 * MS)) <= BLOCK, `D at ${d - start}`);
  assert.ok(j.out.slice(start + 80 * MS, d).every((v) => v > 0 && v <= 0.25), "no hole");
});

test("the end of a transmission drains it, reports it, and resets the target", () => {
  const j = make();
  j.frame("tx:1", 40);
  j.run(60 + 100); // one underrun: target 80
  j.frame("tx:1", 40);
  j.send({ type: "end", key: "tx:1" });
  j.run(100);
  assert.deepEqual(j.messages("ended").map((m) => m.key), ["tx:1"]);
  const s = j.stats();
  assert.equal(s.targetMs, 60);
  assert.equal(s.state, "idle");
  assert.equal(s.bufferMs, 0);
});

test("transmissions play one after another", () => {
  const j = make();
  j.frame("tx:1", 40, 0.5);
  j.send({ type: "end", key: "tx:1" });
  j.frame("tx:2", 40, 0.25);
  j.send({ type: "end", key: "tx:2" });
  j.run(200);
  assert.deepEqual(j.messages("ended").map((m) => m.key), ["tx:1", "tx:2"]);
  assert.equal(j.stats().playedSamples, 80 * MS);
});

test("a live backlog is trimmed in quiet moments; a replay never is", () => {
  const live = make();
  for (let i = 0; i < 5; i++) live.frame("tx:1", 40, 0); // 200 ms of silence at once
  live.run(80);
  assert.ok(live.stats().skippedSamples > 0);
  assert.ok(live.stats().bufferMs <= 80 + 1, `${live.stats().bufferMs} ms left`);

  const replay = make();
  for (let i = 0; i < 5; i++) replay.frame("replay:1:1", 40, 0, false);
  replay.send({ type: "end", key: "replay:1:1" });
  replay.run(300);
  assert.equal(replay.stats().skippedSamples, 0);
  assert.equal(replay.stats().playedSamples, 200 * MS);
});

test("the playback tap reports each sound onset after silence, with its context time", () => {
  const j = make();
  const beep = new Float32Array(100 * MS);
  beep.fill(0.75, 50 * MS, 70 * MS); // silence, 20 ms beep, silence
  j.send({ type: "frame", key: "tx:3", samples: beep });
  j.send({ type: "end", key: "tx:3" });
  j.run(200);
  const onsets = j.messages("onset");
  assert.equal(onsets.length, 1);
  assert.equal(onsets[0].key, "tx:3");
  const at = Math.round(onsets[0].contextTime * RATE);
  assert.equal(j.out[at], 0.75);
  assert.equal(j.out[at - 1], 0);
});

test("media element input is mixed into the output and counted", () => {
  const j = make();
  j.run(20, () => new Float32Array(BLOCK).fill(0.25));
  const s = j.stats();
  assert.equal(s.mediaSamples, j.out.length);
  assert.ok(j.out.every((v) => v === 0.25));
  assert.equal(s.playedSamples, 0);
});

test("reset drops everything at once", () => {
  const j = make();
  j.frame("tx:1", 200);
  j.run(100);
  j.send({ type: "reset" });
  const before = j.out.length;
  j.run(40);
  assert.ok(j.out.slice(before).every((v) => v === 0));
  assert.equal(j.stats().state, "idle");
});

/**
 * Live packets of `packetMs`, block by block: packet k lands at k * packetMs + delayMs(k)
 * after the start (never before the one ahead of it, as over a socket).
 */
function stream(j, { seconds, packetMs = 20, delayMs = () => 0, key = "tx:1", value = 0.5 }) {
  const count = Math.round((seconds * 1000) / packetMs);
  const start = globalThis.currentFrame;
  const due = [];
  for (let k = 0; k < count; k++) {
    due.push(Math.max(due.at(-1) ?? 0, start + Math.round((k * packetMs + delayMs(k)) * MS)));
  }
  let k = 0;
  while (k < count) {
    while (k < count && due[k] <= globalThis.currentFrame) {
      j.frame(key, packetMs, value);
      k++;
    }
    j.run(BLOCK / MS);
  }
}

test("steady packets: the margin shrinks to its floor and the delay falls with it", () => {
  const j = make();
  stream(j, { seconds: 6 });
  const s = j.stats();
  assert.equal(s.underruns, 0);
  assert.equal(s.marginMs, 5);
  assert.equal(s.targetMs, 25); // one 20 ms packet + the 5 ms floor
  assert.equal(s.grows, 0);
  assert.ok(s.shrinks >= 1, `${s.shrinks} shrinks`);
  // The headroom given back was dropped (in this stream without pauses, two samples a
  // block), so the buffer itself is shallower: about the target right after a packet.
  assert.ok(s.skippedSamples >= 14 * MS, `${s.skippedSamples / MS} ms trimmed`);
  assert.ok(s.bufferMs <= 25 + BLOCK / MS, `${s.bufferMs} ms buffered`);
});

test("bursty arrival: the margin grows until the bursts play without underruns", () => {
  // Five packets at once every 100 ms: the first of each burst is 80 ms late.
  const j = make();
  stream(j, { seconds: 4, delayMs: (k) => 80 - 20 * (k % 5) });
  const first = j.stats();
  assert.ok(first.underruns >= 1 && first.grows >= 1, JSON.stringify(first));
  assert.ok(first.targetMs >= 100, `target ${first.targetMs} ms`); // covers the 80 ms wait
  // Once grown, it holds: more of the same plays through.
  stream(j, { seconds: 4, delayMs: (k) => 80 - 20 * (k % 5) });
  const later = j.stats();
  assert.equal(later.underruns, first.underruns);
  assert.ok(later.targetMs >= 80 && later.targetMs <= 120, `target ${later.targetMs} ms`);
});

test("a stall (a TCP retransmission) is concealed; its late audio is dropped, not waited for", () => {
  // Steady 20 ms packets, then the packets of 120 ms held up and delivered at once.
  const j = make();
  const stall = (k) => (k >= 150 && k < 156 ? 120 - 20 * (k - 150) : 0);
  stream(j, { seconds: 4, delayMs: stall });
  const s = j.stats();
  assert.equal(s.underruns, 1); // the stall, once
  assert.ok(s.lateFrames >= 1);
  assert.ok(s.concealedSamples > 0); // the stall was faded over, not a hard cut
  // What came too late was dropped when the burst arrived: about the stall less the margin.
  assert.ok(s.lateDroppedSamples >= 90 * MS, `${s.lateDroppedSamples / MS} ms dropped`);
  // One slow packet in a hundred does not move the margin: back at its floor, and the buffer
  // no deeper than before the stall.
  assert.equal(s.marginMs, 5);
  assert.ok(s.bufferMs <= 25 + (2 * BLOCK) / MS, `${s.bufferMs} ms buffered`); // blocks round
});

test("audio later than the cap is dropped as it lands, never played that late", () => {
  // Steady packets, then a 400 ms stall that drains slowly (TCP after a timeout: one packet,
  // then two at a time, then three), then steady again.
  const j = make();
  const drain = [400, 380, 340, 320, 280, 260];
  stream(j, { seconds: 6, delayMs: (k) => (k >= 100 && k < 106 ? drain[k - 100] : 0) });
  const s = j.stats();
  // Packets 100-111 land more than 120 ms late (those behind the stall are held up too):
  // dropped on arrival; the burst that follows is cut back to the target as playback resumes.
  assert.ok(s.lateDroppedSamples >= 12 * 20 * MS, `${s.lateDroppedSamples / MS} ms dropped`);
  assert.ok(s.lateDroppedSamples <= 400 * MS, `${s.lateDroppedSamples / MS} ms dropped`);
  // Three seconds on, the stall has left the remembered packets: the margin is back at its
  // floor and the buffer holds no more than that.
  assert.equal(s.marginMs, 5);
  assert.ok(s.bufferMs <= 25 + (2 * BLOCK) / MS, `${s.bufferMs} ms buffered`);
});

test("one stall is one late event: the burst it releases does not raise the margin", () => {
  // Steady packets, a 300 ms stall at 2 s (a page's main thread busy, a TCP retransmission),
  // then steady again. The 15 packets held up land together; counted one by one they were a
  // tenth of the remembered packets and kept the margin at its cap for three seconds.
  const j = make();
  const stall = (k) => (k >= 100 && k < 115 ? 300 - 20 * (k - 100) : 0);
  stream(j, { seconds: 3, delayMs: stall });
  const s = j.stats();
  assert.equal(s.marginMs, 5, `margin ${s.marginMs} ms a second after the stall`);
});
