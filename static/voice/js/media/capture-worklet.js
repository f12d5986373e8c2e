// AudioWorklet side of Capture: mixes the microphone to mono and posts blocks of `blockSize`
// samples (Float32Array, transferred) to the page, which encodes them. Nothing is stored.

class CblineCaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.blockSize = options?.processorOptions?.blockSize || 480; // 10 ms at 48 kHz
    this.buf = new Float32Array(this.blockSize);
    this.fill = 0;
    this.active = true;
    this.port.onmessage = (e) => {
      if (e.data?.type === "flush") {
        this.post();
        this.active = false;
        this.port.postMessage({ type: "flushed" });
      }
    };
  }

  post() {
    if (this.fill === 0) return;
    const block = this.buf.slice(0, this.fill);
    this.port.postMessage({ type: "samples", samples: block, contextTime: currentTime }, [block.buffer]);
    this.fill = 0;
  }

  process(inputs) {
    if (!this.active) return false;
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const n = channels[0].length;
    const scale = 1 / channels.length;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let c = 0; c < channels.length; c++) s += channels[c][i];
      this.buf[this.fill++] = s * scale;
      if (this.fill === this.blockSize) this.post();
    }
    return true;
  }
}

registerProcessor("cbline-capture", CblineCaptureProcessor);
