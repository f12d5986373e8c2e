// CBLINE binary audio frames (docs/protocols/cbline.md): a 16-byte big-endian header, then
// Opus frames (kind 1, each prefixed by a u16 length) or one WebM/Opus chunk (kind 2).
// DOM-free: runs in pages, workers and Node.

export const KIND_OPUS = 1;
export const KIND_WEBM = 2;
export const HEADER_BYTES = 16;
export const FLAG_LAST = 0x01;

const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

function checkUint(name, value, max) {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${name} must be an integer in 0..${max}, got ${value}`);
  }
}

function toBytes(name, value) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`${name} must be a Uint8Array or ArrayBuffer`);
}

/** Build one binary frame. Returns an ArrayBuffer ready for WebSocket.send(). */
export function packPacket({ kind, last = false, seq, txId, captureTs, frames, chunk }) {
  checkUint("seq", seq, U16_MAX);
  checkUint("txId", txId, U32_MAX);
  if (typeof captureTs !== "number" || !Number.isFinite(captureTs)) {
    throw new TypeError("captureTs must be a finite number (ms)");
  }
  let payload;
  if (kind === KIND_OPUS) {
    if (!Array.isArray(frames) || frames.length === 0) throw new TypeError("kind 1 needs one or more frames");
    const parts = frames.map((f, i) => toBytes(`frames[${i}]`, f));
    let size = 0;
    for (const p of parts) {
      if (p.byteLength === 0 || p.byteLength > U16_MAX) throw new RangeError("an Opus frame must be 1..65535 bytes");
      size += 2 + p.byteLength;
    }
    payload = new Uint8Array(size);
    const view = new DataView(payload.buffer);
    let off = 0;
    for (const p of parts) {
      view.setUint16(off, p.byteLength);
      payload.set(p, off + 2);
      off += 2 + p.byteLength;
    }
  } else if (kind === KIND_WEBM) {
    payload = toBytes("chunk", chunk);
    if (payload.byteLength === 0) throw new RangeError("kind 2 needs a non-empty chunk");
  } else {
    throw new RangeError(`unknown kind ${kind}`);
  }
  const out = new Uint8Array(HEADER_BYTES + payload.byteLength);
  const view = new DataView(out.buffer);
  view.setUint8(0, kind);
  view.setUint8(1, last ? FLAG_LAST : 0);
  view.setUint16(2, seq);
  view.setUint32(4, txId);
  view.setFloat64(8, captureTs);
  out.set(payload, HEADER_BYTES);
  return out.buffer;
}

/** Parse one binary frame; throws on anything malformed. Payload views share the input buffer. */
export function unpackPacket(buffer) {
  const bytes = toBytes("packet", buffer);
  if (bytes.byteLength < HEADER_BYTES + 1) throw new RangeError("packet shorter than header + payload");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kind = view.getUint8(0);
  const flags = view.getUint8(1);
  if (flags & ~FLAG_LAST) throw new RangeError(`unknown flags 0x${flags.toString(16)}`);
  const header = {
    kind,
    last: (flags & FLAG_LAST) !== 0,
    seq: view.getUint16(2),
    txId: view.getUint32(4),
    captureTs: view.getFloat64(8),
  };
  if (!Number.isFinite(header.captureTs)) throw new RangeError("captureTs is not a finite number");
  if (kind === KIND_OPUS) {
    const frames = [];
    let off = HEADER_BYTES;
    while (off < bytes.byteLength) {
      if (off + 2 > bytes.byteLength) throw new RangeError("truncated Opus frame length");
      const len = view.getUint16(off);
      off += 2;
      if (len === 0) throw new RangeError("empty Opus frame");
      if (off + len > bytes.byteLength) throw new RangeError("Opus frame runs past the packet end");
      frames.push(bytes.subarray(off, off + len));
      off += len;
    }
    return { ...header, frames };
  }
  if (kind === KIND_WEBM) return { ...header, chunk: bytes.subarray(HEADER_BYTES) };
  throw new RangeError(`unknown kind ${kind}`);
}

/** The header only (cheap: for routing or stats without copying the payload). */
export function peekHeader(buffer) {
  const bytes = toBytes("packet", buffer);
  if (bytes.byteLength < HEADER_BYTES) throw new RangeError("packet shorter than header");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    kind: view.getUint8(0),
    last: (view.getUint8(1) & FLAG_LAST) !== 0,
    seq: view.getUint16(2),
    txId: view.getUint32(4),
    captureTs: view.getFloat64(8),
  };
}
