// Playback side of CBLINE: an adaptive jitter buffer in the audio thread. Decoded 48 kHz mono
// frames arrive per transmission, a packet (`packet` samples, 20 ms by default) at a time.
// `target` is the depth the buffer has right after an on-time packet lands: one packet plus
// the `margin` for late ones. Playback starts once the audio buffered plus the time waited
// since the first packet reaches the target, so the delay added here is only the margin.
// The margin adapts to the arrivals. Each packet's arrival is compared with its place in the
// transmission's timeline; over the last REL_WINDOW packets, how much later than the fastest
// one 95 % of them came is the margin needed (never below MIN_MARGIN, the target never above
// MAX_TARGET). Packets that land in a burst behind another count as one late event. Every half second of playback the margin is set to that: headroom no longer
// needed is given back (that much audio is trimmed in quiet moments, so the delay falls
// with it); an underrun grows it at once by GROW_STEP. The slowest packets are not waited
// for: when a stall (a TCP retransmission) ends in a burst, the audio that missed its time
// has been concealed already and is dropped, so the stall does not delay what follows; a
// frame that lands more than MAX_TARGET behind the fastest recent packet is dropped at once.
// A backlog above the target is trimmed in quiet moments. A lost packet is concealed by
// repeating the last frame with a fade. The node's input (MediaSource playback of WebM
// chunks) is mixed into the output. Every output block is measured: levels, and the context
// time of each sound onset (the playback tap).
// Audio is held only while it waits to be played.

const MS = sampleRate / 1000;
const DEFAULT_PACKET = 20 * MS; // a frame message that does not say its packet size
const INITIAL_MARGIN = 20 * MS;
const MIN_MARGIN = 5 * MS; // two render quanta: the floor of what a steady stream needs
// Beyond, late audio is dropped rather than everything delayed. Under 30 +- 15 ms and 2 % loss
// each way TCP's retransmissions keep the margin at this cap: 120 ms held talk-to-hear p95 at
// 211-214 ms (3 runs), 100 ms at 193-194 ms (2 runs), for 10-11 % concealed instead of 7-10 %.
const MAX_TARGET = 100 * MS;
const GROW_STEP = 10 * MS;
const CATCH_UP_ABOVE = 20 * MS; // slack before a backlog is trimmed
const REVIEW_EVERY = sampleRate / 2; // samples of live playback between two margin reviews
const REL_WINDOW = 150; // packets remembered (3 s of 20 ms packets)
const BURST_GAP = 5 * MS; // packets landing closer than this behind another came in one burst
const LATE_QUANTILE = 0.95; // packets later than this share are concealed, not waited for
const MAX_CONCEAL = 60 * MS; // beyond this a loss becomes silence
const SILENT = 1e-3;
const ONSET_LEVEL = 0.1;
const ONSET_QUIET = 80 * MS;
const REPORT_EVERY = 20; // blocks (about 53 ms)

class Transmission {
  constructor(key, live, packet) {
    this.key = key;
    this.live = live; // a replay arrives all at once and must not be trimmed
    this.packet = packet;
    this.queue = []; // Float32Array chunks; the first one is read from `offset`
    this.offset = 0;
    this.buffered = 0;
    this.ended = false;
    this.lastFrame = null;
    this.framesIn = 0;
    this.received = 0; // samples of the timeline received (frames and concealed gaps)
    this.rels = []; // recent packets: arrival frame - timeline position of the packet's start
    this.leads = []; // the same, for packets that did not land in a burst behind another
    this.lastArrival = -Infinity;
  }

  /**
   * A frame of a live transmission lands now: note how early or late its packet is. Returns
   * how much later it came than the fastest packet remembered (0 while there are few).
   */
  arrived(samples) {
    const start = this.received - (this.received % this.packet);
    this.received += samples;
    if (!this.live) return 0;
    const rel = currentFrame - start;
    this.rels.push(rel);
    if (this.rels.length > REL_WINDOW) this.rels.shift();
    // A stall releases the packets it held up in one burst: one late event, counted once (by
    // its first, latest packet), or a single stall would hold the margin up for REL_WINDOW.
    if (currentFrame - this.lastArrival >= BURST_GAP) {
      this.leads.push(rel);
      if (this.leads.length > REL_WINDOW) this.leads.shift();
    }
    this.lastArrival = currentFrame;
    return this.rels.length < 10 ? 0 : rel - Math.min(...this.rels);
  }

  /** Margin the recent arrivals need: the LATE_QUANTILE of late events behind the fastest. */
  neededMargin() {
    if (this.leads.length < 10) return null;
    const sorted = [...this.leads].sort((a, b) => a - b);
    return sorted[Math.ceil(LATE_QUANTILE * (sorted.length - 1))] - Math.min(...this.rels);
  }

  push(samples) {
    this.queue.push(samples);
    this.buffered += samples.length;
    this.lastFrame = samples;
    this.framesIn++;
  }

  /** Copies up to `n` samples into out[at..]; returns how many. */
  read(out, at, n) {
    let done = 0;
    while (done < n && this.queue.length) {
      const head = this.queue[0];
      const take = Math.min(n - done, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + take), at + done);
      this.offset += take;
      done += take;
      if (this.offset === head.length) { this.queue.shift(); this.offset = 0; }
    }
    this.buffered -= done;
    return done;
  }

  /** Drops up to `n` samples (catching up when the buffer is deeper than needed). */
  skip(n) {
    let left = Math.min(n, this.buffered);
    const dropped = left;
    while (left > 0) {
      const head = this.queue[0];
      const take = Math.min(left, head.length - this.offset);
      this.offset += take;
      left -= take;
      if (this.offset === head.length) { this.queue.shift(); this.offset = 0; }
    }
    this.buffered -= dropped;
    return dropped;
  }
}

/**
 * Writes the concealment for positions `pos`.. of a loss into out[at..]: the last frame
 * repeated at half level, fading to silence over MAX_CONCEAL. Returns the samples written.
 */
function fade(src, out, at, pos) {
  let n = 0;
  for (let i = at; i < out.length && pos + n < MAX_CONCEAL; i++, n++) {
    const p = pos + n;
    out[i] = src[p % src.length] * 0.5 * (1 - p / MAX_CONCEAL);
  }
  return n;
}

class CblineJitterProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.txs = new Map(); // key -> Transmission, in arrival order
    this.current = null;
    this.state = "idle"; // idle | buffering | playing | rebuffering
    this.packet = DEFAULT_PACKET; // of the transmission playing (or the last one)
    this.margin = INITIAL_MARGIN;
    this.window = 0; // samples of live playback since the last review
    this.trimDebt = 0; // unneeded headroom still to trim, in quiet moments
    this.concealed = 0; // concealment samples played since the last underrun
    this.stall = 0; // samples output since the last underrun (how far playback fell behind)
    this.waitFrom = null; // frame at which audio first waited to be played
    this.blocks = 0;
    this.quiet = ONSET_QUIET;
    this.levelSum = 0;
    this.levelCount = 0;
    this.stats = {
      playedSamples: 0, nonSilentSamples: 0, mediaSamples: 0, underruns: 0, lateFrames: 0,
      concealedSamples: 0, skippedSamples: 0, framesIn: 0, transmissions: 0,
      grows: 0, shrinks: 0, lateDroppedSamples: 0,
    };
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  /** Depth right after an on-time packet lands: one packet plus the margin. */
  get target() {
    return Math.min(MAX_TARGET, this.packet + this.margin);
  }

  tx(key, live = true, packet = DEFAULT_PACKET) {
    let tx = this.txs.get(key);
    if (!tx) {
      tx = new Transmission(key, live, packet);
      this.txs.set(key, tx);
    }
    return tx;
  }

  grow() {
    this.margin = Math.min(MAX_TARGET - this.packet, this.margin + GROW_STEP);
    this.stats.grows++;
    this.trimDebt = 0;
  }

  /** Every REVIEW_EVERY of playback: the margin becomes what the recent arrivals needed. */
  review(tx) {
    this.window = 0;
    const needed = tx.neededMargin();
    if (needed === null) return;
    const want = Math.max(MIN_MARGIN, Math.min(MAX_TARGET - this.packet, needed));
    if (want > this.margin) {
      this.margin = want;
      this.stats.grows++;
    } else if (want < this.margin) {
      // The margin is only a number: the delay falls once that much audio is dropped.
      this.trimDebt += this.margin - want;
      this.margin = want;
      this.stats.shrinks++;
    }
  }

  onMessage(msg) {
    switch (msg.type) {
      case "frame": {
        const tx = this.tx(msg.key, msg.live !== false, msg.packet > 0 ? msg.packet : DEFAULT_PACKET);
        if (tx.ended) return;
        if (tx === this.current && this.state === "rebuffering") this.stats.lateFrames++;
        if (tx.arrived(msg.samples.length) > MAX_TARGET) {
          // Later than any target would wait (a long TCP stall draining): its time has passed
          // and was concealed; played now it would delay everything after it.
          this.stats.lateDroppedSamples += msg.samples.length;
          return;
        }
        tx.push(msg.samples);
        this.stats.framesIn++;
        break;
      }
      case "gap": {
        // Packets that never came (the next one says so): conceal them in place, with the
        // last frame fading out. If playback already ran dry waiting for them, the stall
        // was the loss, not a late network: it counts as concealment, not as an underrun.
        const tx = this.tx(msg.key);
        if (tx.ended || !tx.lastFrame) return;
        let missing = msg.samples;
        let from = 0;
        if (tx === this.current && this.state === "rebuffering" && this.stall > 0) {
          const covered = Math.min(this.stall, missing);
          missing -= covered;
          from = this.concealed;
          this.stall = 0;
          this.stats.underruns--;
          this.stats.grows--;
          this.margin = Math.max(MIN_MARGIN, this.margin - GROW_STEP);
          this.state = "playing";
        }
        tx.received += msg.samples; // the whole gap is the timeline's, played or still to be
        if (missing > 0) {
          const filler = new Float32Array(missing);
          this.stats.concealedSamples += fade(tx.lastFrame, filler, 0, from);
          tx.queue.push(filler);
          tx.buffered += filler.length;
        }
        break;
      }
      case "end":
        this.tx(msg.key).ended = true;
        break;
      case "drop":
        this.txs.delete(msg.key);
        if (this.current?.key === msg.key) this.finish(false);
        break;
      case "reset":
        this.txs.clear();
        this.current = null;
        this.state = "idle";
        break;
      case "stats":
        this.report(msg.id);
        break;
      default:
    }
  }

  report(id = null) {
    this.port.postMessage({
      type: "stats", id,
      stats: {
        ...this.stats,
        bufferMs: (this.current ? this.current.buffered : 0) / MS,
        targetMs: this.target / MS,
        marginMs: this.margin / MS,
        packetMs: this.packet / MS,
        state: this.state,
        level: this.levelCount ? Math.sqrt(this.levelSum / this.levelCount) : 0,
      },
    });
    this.levelSum = 0;
    this.levelCount = 0;
  }

  /** Next transmission to play: the oldest one that has audio or has ended. */
  pick() {
    for (const tx of this.txs.values()) {
      if (tx.buffered > 0 || tx.ended) return tx;
    }
    return null;
  }

  finish(notify = true) {
    const tx = this.current;
    this.current = null;
    this.state = "idle";
    if (!tx) return;
    this.txs.delete(tx.key);
    this.margin = INITIAL_MARGIN; // each transmission starts afresh
    this.window = 0;
    this.trimDebt = 0;
    if (notify) this.port.postMessage({ type: "ended", key: tx.key });
  }

  fill(out) {
    let at = 0;
    while (at < out.length) {
      if (!this.current) {
        this.current = this.pick();
        if (!this.current) return;
        this.state = "buffering";
        this.packet = this.current.packet;
        this.waitFrom = null;
        this.stats.transmissions++;
      }
      const tx = this.current;
      if (this.state === "buffering" || this.state === "rebuffering") {
        if (tx.buffered > 0 && this.waitFrom === null) this.waitFrom = currentFrame + at;
        const waited = this.waitFrom === null ? 0 : currentFrame + at - this.waitFrom;
        if (tx.buffered + waited >= this.target || (tx.ended && tx.buffered > 0)) {
          this.waitFrom = null;
          if (this.state === "buffering") {
            // The transmission's first sample leaves now (press-to-first-audio).
            this.port.postMessage({ type: "started", key: tx.key, contextTime: currentTime + at / sampleRate });
          } else if (tx.live && tx.buffered > this.target + CATCH_UP_ABOVE) {
            // A stall (a retransmission held everything up) ended in a burst: the audio that
            // missed its time was concealed already; playing it now would delay all that
            // follows. Resume at the target depth instead.
            this.stats.lateDroppedSamples += tx.skip(tx.buffered - this.target);
          }
          this.state = "playing";
        } else if (tx.ended) {
          this.finish();
          continue;
        } else {
          if (this.state === "rebuffering") this.conceal(tx, out, at);
          return;
        }
      }
      // playing
      if (tx.live && (tx.buffered > this.target + CATCH_UP_ABOVE || this.trimDebt > 0)) {
        this.catchUp(tx, out.length - at);
      }
      const got = tx.read(out, at, out.length - at);
      at += got;
      this.stats.playedSamples += got;
      if (tx.live) {
        this.window += got;
        if (this.window >= REVIEW_EVERY) this.review(tx);
      }
      if (at < out.length) {
        if (tx.ended) { this.finish(); continue; }
        // Ran dry mid-transmission: count it, wait for a deeper buffer.
        this.stats.underruns++;
        this.grow();
        this.concealed = 0;
        this.stall = 0;
        this.waitFrom = null;
        this.state = "rebuffering";
        this.conceal(tx, out, at);
        return;
      }
    }
  }

  /** While waiting after an underrun, fade the last frame out instead of a hard cut. */
  conceal(tx, out, at) {
    this.stall += out.length - at;
    if (!tx.lastFrame || this.concealed >= MAX_CONCEAL) return;
    const written = fade(tx.lastFrame, out, at, this.concealed);
    this.concealed += written;
    this.stats.concealedSamples += written;
  }

  /**
   * Buffer deeper than needed (a burst after a stall, or headroom given back): drop a little,
   * a whole block where it is quiet, two samples where it is not.
   */
  catchUp(tx, blockLen) {
    const head = tx.queue[0];
    let quiet = true;
    if (head) {
      const end = Math.min(head.length, tx.offset + blockLen);
      for (let i = tx.offset; i < end; i++) if (Math.abs(head[i]) > 0.02) { quiet = false; break; }
    }
    const backlog = tx.buffered - this.target - CATCH_UP_ABOVE > 0 ? tx.buffered - this.target : 0;
    const excess = Math.max(backlog, Math.min(this.trimDebt, tx.buffered));
    const skipped = tx.skip(quiet ? Math.min(excess, blockLen) : Math.min(excess, 2));
    this.trimDebt = Math.max(0, this.trimDebt - skipped);
    this.stats.skippedSamples += skipped;
  }

  measure(out) {
    let sum = 0;
    let onsetAt = -1;
    for (let i = 0; i < out.length; i++) {
      const v = out[i];
      const a = Math.abs(v);
      sum += v * v;
      if (a > SILENT) this.stats.nonSilentSamples++;
      if (a >= ONSET_LEVEL) {
        if (this.quiet >= ONSET_QUIET && onsetAt < 0) onsetAt = i;
        this.quiet = 0;
      } else {
        this.quiet++;
      }
    }
    this.levelSum += sum;
    this.levelCount += out.length;
    if (onsetAt >= 0) {
      this.port.postMessage({
        type: "onset", contextTime: currentTime + onsetAt / sampleRate,
        key: this.current?.key ?? null,
      });
    }
  }

  process(inputs, outputs) {
    const outs = outputs[0];
    const out = outs[0];
    out.fill(0);
    this.fill(out);
    const media = inputs[0];
    if (media && media.length) {
      const scale = 1 / media.length;
      for (let c = 0; c < media.length; c++) {
        const ch = media[c];
        for (let i = 0; i < out.length; i++) {
          const v = ch[i] * scale;
          if (v !== 0) { out[i] += v; if (Math.abs(v) > SILENT) this.stats.mediaSamples++; }
        }
      }
    }
    for (let c = 1; c < outs.length; c++) outs[c].set(out);
    this.measure(out);
    if (++this.blocks % REPORT_EVERY === 0) this.report();
    return true;
  }
}

registerProcessor("cbline-jitter", CblineJitterProcessor);
