// Microphone to CBLINE audio packets. WebCodecs path: 48 kHz mono Opus in 20 ms frames,
// grouped into packets of `packetMs`. Fallback: MediaRecorder WebM/Opus chunks (kind 2).
// Nothing is written anywhere: packets go to `onPacket` and are forgotten.

import { KIND_OPUS, KIND_WEBM } from "./protocol.js";
import { OnsetDetector, SampleClock, pageNow, rms } from "./clock.js";

export const OPUS_FRAME_MS = 20;
export const WEBM_MIME = "audio/webm;codecs=opus";
const WORKLET_BLOCK = 480; // 10 ms at 48 kHz: small blocks keep the capture delay low

let sharedContext = null;

/** One 48 kHz AudioContext for capture, reused across presses (creating one costs time). */
async function captureContext() {
  if (!sharedContext || sharedContext.state === "closed") {
    sharedContext = (async () => {
      const ctx = new AudioContext({ sampleRate: 48000, latencyHint: "interactive" });
      await ctx.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url));
      return ctx;
    })();
  }
  return sharedContext;
}

/** Opus encoder settings, lowest delay first; the first one the browser accepts is used. */
function encoderConfigs(sampleRate, bitrate) {
  const base = { codec: "opus", sampleRate, numberOfChannels: 1, bitrate };
  return [
    { ...base, opus: { frameDuration: OPUS_FRAME_MS * 1000, application: "voip", signal: "voice", usedtx: false } },
    { ...base, opus: { frameDuration: OPUS_FRAME_MS * 1000 } },
  ];
}

/** Microphone constraints suited to voice (the caller may pass its own to getUserMedia). */
export const VOICE_CONSTRAINTS = {
  audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
};

export class Capture {
  /**
   * @param {object} o
   * @param {number} [o.packetMs=20] audio per packet (a multiple of 20 ms for Opus; the server
   *   says which in floor.granted)
   * @param {(kind:number, framesOrChunk:Uint8Array[]|Uint8Array, captureTs:number, isLast:boolean)=>void} o.onPacket
   * @param {"auto"|"webcodecs"|"mediarecorder"} [o.mode="auto"]
   * @param {"auto"|"worklet"|"processor"} [o.source="auto"] where WebCodecs samples come from
   * @param {(ts:number)=>void} [o.onOnset] page time of each sound onset (benchmarks, tests)
   * @param {(rms:number)=>void} [o.onLevel] microphone level, about every 10 ms
   */
  constructor({
    packetMs = 20, onPacket, mode = "auto", source = "auto", bitrate = 24000,
    onOnset = null, onLevel = null,
  } = {}) {
    if (typeof onPacket !== "function") throw new TypeError("onPacket is required");
    this.packetMs = packetMs;
    this.onPacket = onPacket;
    this.requestedMode = mode;
    this.requestedSource = source;
    this.bitrate = bitrate;
    this.onOnset = onOnset;
    this.onLevel = onLevel;
    this.running = false;
    this.mode = null;
    this.stats = { packets: 0, frames: 0, samples: 0, source: null, config: null };
  }

  static supportsWebCodecs() {
    return typeof AudioEncoder === "function" && typeof AudioData === "function"
      && typeof EncodedAudioChunk === "function"
      && (typeof AudioWorkletNode === "function" || typeof MediaStreamTrackProcessor === "function");
  }

  static supportsMediaRecorder() {
    return typeof MediaRecorder === "function" && MediaRecorder.isTypeSupported(WEBM_MIME);
  }

  /**
   * Prepare the capture audio graph ahead of the first press (joining a channel is a good
   * moment): the first press then starts sending about 50 ms sooner.
   */
  static async warmUp() {
    if (Capture.preferredMode() === "webcodecs" && typeof AudioWorkletNode === "function") {
      await captureContext();
    }
  }

  /** The `mode` to announce in `floor.request`. */
  static preferredMode() {
    if (Capture.supportsWebCodecs()) return "webcodecs";
    if (Capture.supportsMediaRecorder()) return "mediarecorder";
    return null;
  }

  async start(stream) {
    if (this.running) throw new Error("capture already running");
    const track = stream?.getAudioTracks?.()[0];
    if (!track) throw new Error("the stream has no audio track");
    this.mode = this.requestedMode === "auto" ? Capture.preferredMode() : this.requestedMode;
    if (!this.mode) throw new Error("this browser can neither encode Opus nor record WebM audio");
    this.running = true;
    this.tapOnly = false;
    this.stats = { packets: 0, frames: 0, samples: 0, source: null, config: null };
    this.lastTs = -Infinity;
    try {
      if (this.mode === "webcodecs") await this.startWebCodecs(stream, track);
      else await this.startRecorder(stream);
    } catch (err) {
      this.running = false;
      await this.teardown();
      throw err;
    }
  }

  /** Stops the microphone tap, flushes the encoder and sends the last packet (flagged). */
  async stop() {
    if (!this.running) return;
    this.running = false;
    try {
      if (this.mode === "webcodecs") await this.stopWebCodecs();
      else await this.stopRecorder();
    } finally {
      await this.teardown();
    }
  }

  // --- WebCodecs -----------------------------------------------------------------------

  async startWebCodecs(stream, track) {
    const useProcessor = this.requestedSource === "processor"
      || (this.requestedSource === "auto" && typeof MediaStreamTrackProcessor === "function"
        && track.getSettings().sampleRate === 48000);
    if (!useProcessor && typeof AudioWorkletNode !== "function") throw new Error("no AudioWorklet");
    const rate = useProcessor ? (track.getSettings().sampleRate || 48000) : 48000;
    await this.openEncoder(rate);
    this.stats.source = useProcessor ? "processor" : "worklet";
    if (useProcessor) this.startProcessor(track);
    else await this.startWorklet(stream);
  }

  async openEncoder(rate) {
    let config = null;
    for (const candidate of encoderConfigs(rate, this.bitrate)) {
      const { supported } = await AudioEncoder.isConfigSupported(candidate);
      if (supported) { config = candidate; break; }
    }
    if (!config) throw new Error(`Opus encoding at ${rate} Hz is not supported`);
    this.initSamples(rate);
    this.frameSamples = Math.round((rate * OPUS_FRAME_MS) / 1000);
    this.framesPerPacket = Math.max(1, Math.round(this.packetMs / OPUS_FRAME_MS));
    this.pending = [];
    this.stopping = false;
    this.encoderError = null;
    this.encoder = new AudioEncoder({
      output: (chunk) => this.onEncoded(chunk),
      error: (e) => { this.encoderError = e; },
    });
    this.encoder.configure(config);
    this.stats.config = config;
  }

  /** Sample bookkeeping shared by the encoder and the level/onset tap. */
  initSamples(rate) {
    this.rate = rate;
    this.fed = 0;
    this.clock = new SampleClock(rate);
    this.onsets = this.onOnset ? new OnsetDetector({ sampleRate: rate }) : null;
    this.onsetIndices = [];
  }

  async startWorklet(stream) {
    const ctx = await captureContext();
    if (ctx.state !== "running") await ctx.resume();
    this.sourceNode = ctx.createMediaStreamSource(stream);
    this.tapNode = new AudioWorkletNode(ctx, "cbline-capture", {
      numberOfInputs: 1, numberOfOutputs: 0, channelCountMode: "max",
      processorOptions: { blockSize: WORKLET_BLOCK },
    });
    this.flushed = new Promise((resolve) => { this.resolveFlushed = resolve; });
    this.tapNode.port.onmessage = (e) => {
      if (e.data.type === "samples") this.feed(e.data.samples, pageNow());
      else if (e.data.type === "flushed") this.resolveFlushed();
    };
    this.sourceNode.connect(this.tapNode);
  }

  startProcessor(track) {
    this.processorTrack = track.clone();
    const reader = new MediaStreamTrackProcessor({ track: this.processorTrack }).readable.getReader();
    this.reader = reader;
    this.readLoop = (async () => {
      for (;;) {
        const { value, done } = await reader.read().catch(() => ({ done: true }));
        if (done) return;
        const arrival = pageNow();
        const mono = mixToMono(value);
        const sameRate = value.sampleRate === this.rate;
        value.close();
        if (!sameRate) throw new Error("the microphone changed its sample rate");
        if (this.running) this.feed(mono, arrival);
      }
    })();
  }

  /** Samples in (mono, this.rate): stamp, meter, encode. `arrival` null for padding. */
  feed(samples, arrival) {
    const encoding = this.encoder?.state === "configured";
    if (!encoding && !this.tapOnly) return;
    const start = this.fed;
    this.fed += samples.length;
    if (arrival !== null) {
      this.clock.observe(this.fed, arrival);
      this.stats.samples += samples.length;
      if (this.onLevel) this.onLevel(rms(samples));
      if (this.onsets) {
        for (const i of this.onsets.feed(samples)) {
          this.onsetIndices.push(start + i);
          this.onOnset(this.clock.at(start + i));
        }
      }
    }
    if (!encoding) return;
    const data = new AudioData({
      format: "f32-planar", sampleRate: this.rate, numberOfFrames: samples.length,
      numberOfChannels: 1, timestamp: Math.round((start * 1e6) / this.rate), data: samples,
    });
    this.encoder.encode(data);
    data.close();
  }

  onEncoded(chunk) {
    const bytes = new Uint8Array(chunk.byteLength);
    chunk.copyTo(bytes);
    this.pending.push({ bytes, start: Math.round((chunk.timestamp * this.rate) / 1e6) });
    this.stats.frames++;
    // While stopping, frames wait: the flush decides which packet is the last.
    if (!this.stopping && this.pending.length >= this.framesPerPacket) this.emitOpus(this.framesPerPacket, false);
  }

  emitOpus(count, last) {
    const group = this.pending.splice(0, count);
    let ts = this.clock.at(group[0].start);
    // The clock is an estimate; a stamp of audio just captured (or the stop's padding) can land
    // a few ms past the present, and a capture stamp in the future misleads every latency reading.
    if (!Number.isFinite(ts) || ts > pageNow()) ts = pageNow();
    if (ts <= this.lastTs) ts = this.lastTs + 0.001; // stamps stay monotonic
    this.lastTs = ts;
    this.stats.packets++;
    this.onPacket(KIND_OPUS, group.map((f) => f.bytes), ts, last);
  }

  async stopWebCodecs() {
    this.stopping = true;
    if (this.tapNode) {
      this.tapNode.port.postMessage({ type: "flush" });
      await Promise.race([this.flushed, sleep(250)]);
    }
    if (this.reader) {
      await this.reader.cancel().catch(() => {});
      await this.readLoop?.catch(() => {});
    }
    if (!this.encoder || this.encoder.state !== "configured") return;
    // Complete the current 20 ms frame with silence, so every captured sample is sent.
    const pad = this.frameSamples - (this.fed % this.frameSamples);
    this.feed(new Float32Array(pad), null);
    await this.encoder.flush();
    if (this.pending.length === 0) {
      // Whole packets have already gone: the last packet must still carry a frame.
      this.feed(new Float32Array(this.frameSamples), null);
      await this.encoder.flush();
    }
    while (this.pending.length > this.framesPerPacket) this.emitOpus(this.framesPerPacket, false);
    if (this.pending.length) this.emitOpus(this.pending.length, true);
    if (this.encoderError) throw this.encoderError;
  }

  /**
   * Page times of the sound onsets of the last transmission, re-stamped with everything the
   * clock learned by its end (more exact than the live `onOnset` stamps; for measurements).
   */
  onsetTimes() {
    if (!this.clock || !this.onsetIndices) return [];
    return this.onsetIndices.map((i) => this.clock.bestAt(i));
  }

  // --- MediaRecorder fallback ------------------------------------------------------------

  async startRecorder(stream) {
    if (!Capture.supportsMediaRecorder()) throw new Error("MediaRecorder cannot record WebM/Opus here");
    const audioOnly = new MediaStream(stream.getAudioTracks());
    const rec = new MediaRecorder(audioOnly, { mimeType: WEBM_MIME, audioBitsPerSecond: 32000 });
    this.recorder = rec;
    this.stats.source = "mediarecorder";
    this.held = null; // one chunk is held back so the last one can be flagged
    this.chain = Promise.resolve();
    this.recorderStopped = new Promise((resolve) => { rec.onstop = () => resolve(); });
    rec.ondataavailable = (e) => {
      const arrival = pageNow();
      if (!e.data || e.data.size === 0) return;
      this.chain = this.chain.then(async () => {
        const chunk = new Uint8Array(await e.data.arrayBuffer());
        const ts = this.stats.packets === 0 && !this.held ? this.recordStart : arrival - this.packetMs;
        if (this.held) this.emitChunk(this.held, false);
        this.held = { chunk, ts };
      });
    };
    const started = new Promise((resolve, reject) => {
      rec.onstart = () => resolve();
      rec.onerror = (e) => reject(e.error || new Error("MediaRecorder failed"));
    });
    this.recordStart = pageNow();
    rec.start(this.packetMs);
    await started;
    if ((this.onLevel || this.onOnset) && typeof AudioWorkletNode === "function") {
      // Levels and onsets come from a tap beside the recorder; it never blocks recording.
      this.initSamples(48000);
      this.tapOnly = true;
      await this.startWorklet(stream).catch(() => { this.tapOnly = false; });
    }
  }

  emitChunk({ chunk, ts }, last) {
    if (ts <= this.lastTs) ts = this.lastTs + 0.001;
    this.lastTs = ts;
    this.stats.packets++;
    this.onPacket(KIND_WEBM, chunk, ts, last);
  }

  async stopRecorder() {
    if (this.tapNode) {
      this.tapNode.port.postMessage({ type: "flush" });
      await Promise.race([this.flushed, sleep(250)]);
    }
    this.tapOnly = false;
    const rec = this.recorder;
    if (rec && rec.state !== "inactive") rec.stop();
    await Promise.race([this.recorderStopped, sleep(1000)]);
    await this.chain;
    if (this.held) this.emitChunk(this.held, true);
    this.held = null;
  }

  // --------------------------------------------------------------------------------------

  async teardown() {
    try { this.sourceNode?.disconnect(); } catch { /* already gone */ }
    if (this.tapNode) this.tapNode.port.onmessage = null;
    this.processorTrack?.stop();
    if (this.encoder && this.encoder.state !== "closed") this.encoder.close();
    this.sourceNode = this.tapNode = this.processorTrack = this.reader = this.readLoop = null;
    this.encoder = this.recorder = null;
  }
}

function mixToMono(audioData) {
  const n = audioData.numberOfFrames;
  const channels = audioData.numberOfChannels;
  const out = new Float32Array(n);
  const tmp = channels > 1 ? new Float32Array(n) : out;
  for (let c = 0; c < channels; c++) {
    audioData.copyTo(tmp, { planeIndex: c, format: "f32-planar" });
    if (channels > 1) for (let i = 0; i < n; i++) out[i] += tmp[i] / channels;
  }
  return out;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
