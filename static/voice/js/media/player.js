// CBLINE playback: received packets -> decoder -> jitter buffer (AudioWorklet) -> speakers.
// Kind 1 (Opus frames) decodes with WebCodecs' AudioDecoder; kind 2 (WebM/Opus chunks from
// MediaRecorder) plays through MediaSource into the same output node. Audio exists only in
// memory while it is played; nothing is written to any storage.

import { KIND_OPUS, KIND_WEBM } from "./protocol.js";
import { pageNow } from "./clock.js";

const SAMPLE_RATE = 48000;
const FRAME_US = 20000;
const FRAME_SAMPLES = 960; // 20 ms at 48 kHz
const WEBM_MIME = "audio/webm;codecs=opus";
const ENDED_MEMORY = 64; // recently ended transmissions whose stragglers are ignored

export class Player {
  /**
   * @param {object} [o]
   * @param {(rms:number)=>void} [o.onLevel] output level, about every 50 ms
   * @param {(onset:{ts:number, key:string|null, txId:number|null})=>void} [o.onOnset] page time
   *   at which a sound (after silence) comes out of the playback path
   * @param {(started:{ts:number, key:string, txId:number|null})=>void} [o.onStarted] page time
   *   at which a transmission's first sample comes out
   * @param {(txId:number, key:string)=>void} [o.onEnded] a transmission finished playing
   * @param {number|string} [o.latencyHint=0] the AudioContext's latencyHint
   */
  constructor({
    onLevel = null, onOnset = null, onStarted = null, onEnded = null, latencyHint = 0,
  } = {}) {
    // 0: the smallest output buffer the device allows. In Chromium that is one render quantum
    // (2.7 ms) plus the device's own buffer: about 11 ms from the worklet to the speaker,
    // against about 42 ms with "interactive". The cost is less slack for a busy machine's
    // audio thread before the output glitches.
    this.latencyHint = latencyHint;
    this.onLevel = onLevel;
    this.onOnset = onOnset;
    this.onStarted = onStarted;
    this.onEnded = onEnded;
    this.ctx = null;
    this.node = null;
    this.streams = new Map(); // key -> stream state
    this.ended = [];
    this.waiters = new Map(); // key -> resolve, for replay()
    this.replays = 0;
    this.onsets = [];
    this.starts = [];
    this.counters = { packets: 0, decodedFrames: 0, decodeErrors: 0, lostPackets: 0, mediaChunks: 0 };
    this.workletStats = {
      playedSamples: 0, nonSilentSamples: 0, mediaSamples: 0, underruns: 0, lateFrames: 0,
      concealedSamples: 0, skippedSamples: 0, bufferMs: 0, targetMs: 40, state: "idle",
    };
    this.statRequests = new Map();
    this.statId = 0;
  }

  static supportsWebCodecs() {
    return typeof AudioDecoder === "function" && typeof EncodedAudioChunk === "function";
  }

  static supportsMediaSource() {
    return typeof MediaSource === "function" && MediaSource.isTypeSupported(WEBM_MIME);
  }

  async init() {
    if (this.ctx) return;
    this.ctx = new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: this.latencyHint });
    await this.ctx.audioWorklet.addModule(new URL("./jitter-worklet.js", import.meta.url));
    this.node = new AudioWorkletNode(this.ctx, "cbline-jitter", {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
    });
    this.node.port.onmessage = (e) => this.onWorklet(e.data);
    this.node.connect(this.ctx.destination);
  }

  /** Call from a user gesture: browsers start audio only after one. */
  async resume() {
    if (!this.ctx) await this.init();
    if (this.ctx.state !== "running") await this.ctx.resume();
  }

  get stats() {
    return { ...this.workletStats, ...this.counters };
  }

  /** Fresh numbers from the audio thread. */
  async getStats() {
    if (!this.node) return this.stats;
    const id = ++this.statId;
    const reply = new Promise((resolve) => this.statRequests.set(id, resolve));
    this.node.port.postMessage({ type: "stats", id });
    await Promise.race([reply, new Promise((r) => setTimeout(r, 500))]);
    this.statRequests.delete(id);
    return this.stats;
  }

  /** One unpacked packet (see protocol.unpackPacket) of a live transmission. */
  push(packet) {
    if (!this.node) throw new Error("Player.init() first");
    const key = `tx:${packet.txId}`;
    if (this.ended.includes(key)) return; // a straggler after the end
    this.counters.packets++;
    const stream = this.streams.get(key) ?? this.open(key, packet, true);
    this.feed(stream, packet);
    if (packet.last) this.endTransmission(packet.txId);
  }

  /** The transmission is over (last packet seen, or floor.released): play out what is left. */
  endTransmission(txId) {
    this.finishStream(`tx:${txId}`);
  }

  /** Play a stored transmission (ReplayStore.get(txId).packets); resolves once played. */
  replay(packets) {
    if (!this.node) throw new Error("Player.init() first");
    if (!packets?.length) return Promise.resolve();
    const key = `replay:${packets[0].txId}:${++this.replays}`;
    const done = new Promise((resolve) => this.waiters.set(key, resolve));
    const stream = this.open(key, packets[0], false);
    for (const p of [...packets].sort((a, b) => a.seq - b.seq)) this.feed(stream, p);
    this.finishStream(key);
    return done;
  }

  /** Silence everything now (leaving the channel, being kicked). */
  reset() {
    for (const key of [...this.streams.keys()]) this.closeStream(key);
    this.node?.port.postMessage({ type: "reset" });
    for (const resolve of this.waiters.values()) resolve();
    this.waiters.clear();
  }

  async close() {
    this.reset();
    if (this.ctx && this.ctx.state !== "closed") await this.ctx.close();
    this.ctx = this.node = null;
  }

  // --- streams ---------------------------------------------------------------------------

  open(key, first, live) {
    const stream = { key, live, kind: first.kind, txId: first.txId, nextSeq: 0, fpp: null,
      started: false, finishing: false };
    if (first.kind === KIND_OPUS) this.openDecoder(stream);
    else if (first.kind === KIND_WEBM) this.openMedia(stream);
    else throw new RangeError(`unknown kind ${first.kind}`);
    this.streams.set(key, stream);
    return stream;
  }

  feed(stream, p) {
    if (p.kind !== stream.kind) return; // a transmission never changes kind
    if (p.seq < stream.nextSeq) return; // duplicate or out of date
    const lost = p.seq - stream.nextSeq;
    if (lost > 0) this.counters.lostPackets += lost;
    stream.nextSeq = p.seq + 1;
    if (p.kind === KIND_OPUS) this.decodeFrames(stream, p, lost);
    else this.appendChunk(stream, p.chunk);
  }

  finishStream(key) {
    const stream = this.streams.get(key);
    if (!stream) {
      this.node?.port.postMessage({ type: "end", key });
      return;
    }
    if (stream.finishing) return;
    stream.finishing = true;
    this.rememberEnded(key);
    if (stream.kind === KIND_OPUS) {
      const dec = stream.decoder;
      const flushed = dec && dec.state === "configured" ? dec.flush().catch(() => {}) : Promise.resolve();
      flushed.then(() => {
        this.node?.port.postMessage({ type: "end", key });
        if (dec && dec.state !== "closed") dec.close();
      });
    } else {
      stream.media.ended = true;
      this.pump(stream);
    }
  }

  closeStream(key) {
    const stream = this.streams.get(key);
    if (!stream) return;
    this.streams.delete(key);
    if (stream.decoder && stream.decoder.state !== "closed") stream.decoder.close();
    if (stream.media) {
      const m = stream.media;
      m.audio.pause();
      try { m.source.disconnect(); } catch { /* already */ }
      URL.revokeObjectURL(m.url);
      m.audio.removeAttribute("src");
    }
  }

  rememberEnded(key) {
    if (!key.startsWith("tx:")) return;
    this.ended.push(key);
    if (this.ended.length > ENDED_MEMORY) this.ended.shift();
  }

  // --- kind 1: Opus frames through AudioDecoder ----------------------------------------------

  openDecoder(stream) {
    stream.markers = [];
    stream.decoder = new AudioDecoder({
      output: (data) => this.onDecoded(stream, data),
      error: () => { this.counters.decodeErrors++; },
    });
    stream.decoder.configure({ codec: "opus", sampleRate: SAMPLE_RATE, numberOfChannels: 1 });
  }

  decodeFrames(stream, p, lost) {
    if (stream.decoder.state !== "configured") {
      this.counters.decodeErrors++;
      this.openDecoder(stream); // a corrupt frame closed it; go on with the next ones
    }
    if (stream.fpp === null && !p.last) stream.fpp = p.frames.length;
    const fpp = stream.fpp ?? p.frames.length;
    stream.packetSamples = fpp * FRAME_SAMPLES; // the jitter buffer's unit of arrival
    // The decoder yields one output per frame, in order; each output learns from its marker
    // how much audio went missing just before it (concealed in the jitter buffer, in place).
    const gap = lost > 0 && stream.started ? lost * fpp * FRAME_SAMPLES : 0;
    stream.started = true;
    p.frames.forEach((frame, i) => {
      stream.markers.push(i === 0 ? gap : 0);
      const timestamp = (p.seq * fpp + i) * FRAME_US;
      stream.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp, data: frame }));
    });
  }

  onDecoded(stream, data) {
    const n = data.numberOfFrames;
    let samples = new Float32Array(n);
    data.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
    if (data.sampleRate !== SAMPLE_RATE) samples = resampleLinear(samples, data.sampleRate, SAMPLE_RATE);
    data.close();
    const gap = stream.markers.shift() ?? 0;
    this.counters.decodedFrames++;
    const port = this.node?.port;
    if (!port) return;
    if (gap > 0) port.postMessage({ type: "gap", key: stream.key, samples: gap });
    port.postMessage(
      { type: "frame", key: stream.key, live: stream.live, packet: stream.packetSamples, samples },
      [samples.buffer],
    );
  }

  // --- kind 2: WebM chunks through MediaSource -------------------------------------------------

  openMedia(stream) {
    if (!Player.supportsMediaSource()) throw new Error("MediaSource cannot play WebM/Opus here");
    const ms = new MediaSource();
    const audio = new Audio();
    const url = URL.createObjectURL(ms);
    const m = { ms, audio, url, sb: null, queue: [], ended: false, source: null, started: false };
    stream.media = m;
    audio.src = url;
    m.source = this.ctx.createMediaElementSource(audio);
    m.source.connect(this.node);
    ms.addEventListener("sourceopen", () => {
      m.sb = ms.addSourceBuffer(WEBM_MIME);
      m.sb.mode = "sequence";
      m.sb.addEventListener("updateend", () => this.pump(stream));
      this.pump(stream);
    }, { once: true });
    audio.addEventListener("playing", () => {
      if (m.started) return;
      m.started = true;
      const started = { ts: this.contextToPage(this.ctx.currentTime), key: stream.key, txId: stream.txId };
      this.starts.push(started);
      if (this.onStarted) this.onStarted(started);
    });
    audio.addEventListener("ended", () => this.mediaDone(stream));
    audio.addEventListener("error", () => { this.counters.decodeErrors++; this.mediaDone(stream); });
    audio.play().catch(() => { /* starts once data arrives, or after a gesture */ });
  }

  appendChunk(stream, chunk) {
    this.counters.mediaChunks++;
    stream.media.queue.push(chunk.slice()); // own copy: the packet's buffer may be reused
    this.pump(stream);
  }

  pump(stream) {
    const m = stream.media;
    if (!m.sb || m.sb.updating || m.ms.readyState !== "open") return;
    if (m.queue.length) {
      try {
        m.sb.appendBuffer(m.queue.shift());
      } catch {
        this.counters.decodeErrors++;
      }
      if (m.audio.paused) m.audio.play().catch(() => {});
    } else if (m.ended) {
      try { m.ms.endOfStream(); } catch { /* already ended */ }
    }
  }

  mediaDone(stream) {
    if (!this.streams.has(stream.key)) return;
    // Let the last samples leave the graph before disconnecting the element.
    setTimeout(() => {
      this.closeStream(stream.key);
      this.transmissionEnded(stream.key);
    }, 100);
  }

  // --- from the audio thread ---------------------------------------------------------------

  onWorklet(msg) {
    if (msg.type === "stats") {
      Object.assign(this.workletStats, msg.stats);
      if (this.onLevel) this.onLevel(msg.stats.level);
      const resolve = this.statRequests.get(msg.id);
      if (resolve) resolve();
    } else if (msg.type === "onset") {
      const onset = { ts: this.contextToPage(msg.contextTime), key: msg.key, txId: txIdOf(msg.key) };
      this.onsets.push(onset);
      if (this.onsets.length > 500) this.onsets.shift();
      if (this.onOnset) this.onOnset(onset);
    } else if (msg.type === "started") {
      const started = { ts: this.contextToPage(msg.contextTime), key: msg.key, txId: txIdOf(msg.key) };
      this.starts.push(started);
      if (this.starts.length > 100) this.starts.shift();
      if (this.onStarted) this.onStarted(started);
    } else if (msg.type === "ended") {
      const stream = this.streams.get(msg.key);
      if (stream && stream.kind === KIND_OPUS) this.streams.delete(msg.key);
      this.transmissionEnded(msg.key);
    }
  }

  transmissionEnded(key) {
    const resolve = this.waiters.get(key);
    if (resolve) { this.waiters.delete(key); resolve(); }
    if (this.onEnded && key.startsWith("tx:")) this.onEnded(txIdOf(key), key);
  }

  /** Page time (ms, performance.timeOrigin based) at which context time `t` is heard. */
  contextToPage(t) {
    const o = this.ctx.getOutputTimestamp?.();
    if (o && o.performanceTime > 0) {
      return performance.timeOrigin + o.performanceTime + (t - o.contextTime) * 1000;
    }
    const latency = (this.ctx.baseLatency || 0) + (this.ctx.outputLatency || 0);
    return pageNow() + (t - this.ctx.currentTime + latency) * 1000;
  }
}

function txIdOf(key) {
  const m = /^(?:tx|replay):(\d+)/.exec(key || "");
  return m ? Number(m[1]) : null;
}

function resampleLinear(input, from, to) {
  const out = new Float32Array(Math.round((input.length * to) / from));
  const step = from / to;
  for (let i = 0; i < out.length; i++) {
    const x = i * step;
    const j = Math.floor(x);
    const f = x - j;
    out[i] = (input[j] ?? 0) * (1 - f) + (input[j + 1] ?? input[j] ?? 0) * f;
  }
  return out;
}
