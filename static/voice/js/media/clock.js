// Page time (ms since the epoch on this machine's monotonic clock) and the sample-index to
// page-time mapping both ends of a transmission use to stamp audio.

export function pageNow() {
  return performance.timeOrigin + performance.now();
}

/**
 * Maps a sample index of a continuous stream to the page time at which that sample existed.
 * Each block of samples is observed when it arrives; the earliest (least delayed) arrival
 * seen so far anchors the stream, so a busy main thread does not shift the stamps.
 */
export class SampleClock {
  constructor(sampleRate) {
    this.sampleRate = sampleRate;
    this.anchor = Infinity;
  }

  observe(endIndex, arrivalMs) {
    const anchor = arrivalMs - (endIndex * 1000) / this.sampleRate;
    if (anchor < this.anchor) this.anchor = anchor;
  }

  at(index) {
    return this.anchor + (index * 1000) / this.sampleRate;
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
