// Page time (ms since the epoch on this machine's monotonic clock) and the sample-index to
// page-time mapping both ends of a transmission use to stamp audio.

export function pageNow() {
  return performance.timeOrigin + performance.now();
}

/**
 * Maps a sample index of a continuous stream to the page time at which that sample existed.
 * Each block of samples is observed when it arrives; the earliest (least delayed) arrival
 * seen so far anchors the stream, so a busy main thread does not shift the stamps. The
 * anchor used for stamping moves towards a better one by at most `slewMs` per block, so
 * consecutive packets stay exactly their duration apart; `best` is the unslewed estimate,
 * for measurements made after the fact.
 */
export class SampleClock {
  constructor(sampleRate, { slewMs = 0.25 } = {}) {
    this.sampleRate = sampleRate;
    this.slewMs = slewMs;
    this.anchor = Infinity;
    this.best = Infinity;
  }

  observe(endIndex, arrivalMs) {
    const candidate = arrivalMs - (endIndex * 1000) / this.sampleRate;
    if (candidate < this.best) this.best = candidate;
    if (!Number.isFinite(this.anchor)) this.anchor = candidate;
    else if (this.best < this.anchor) this.anchor = Math.max(this.best, this.anchor - this.slewMs);
  }

  at(index) {
    return this.anchor + (index * 1000) / this.sampleRate;
  }

  bestAt(index) {
    return this.best + (index * 1000) / this.sampleRate;
  }
}

/**
 * Finds the first loud sample after a stretch of silence (a beep, a word). Used by the
 * capture side and the latency benchmark to stamp the same sound at both ends.
 */
export class OnsetDetector {
  constructor({ sampleRate, threshold = 0.1, minSilenceMs = 80 } = {}) {
    this.threshold = threshold;
    this.minSilence = Math.round((sampleRate * minSilenceMs) / 1000);
    this.quiet = this.minSilence; // the stream starts as silence
  }

  /** Returns the offsets (within `samples`) where a sound starts. */
  feed(samples) {
    const found = [];
    for (let i = 0; i < samples.length; i++) {
      if (Math.abs(samples[i]) >= this.threshold) {
        if (this.quiet >= this.minSilence) found.push(i);
        this.quiet = 0;
      } else {
        this.quiet++;
      }
    }
    return found;
  }
}

export function rms(samples) {
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  return samples.length ? Math.sqrt(sum / samples.length) : 0;
}
