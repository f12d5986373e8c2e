// The last few received transmissions, for "play again". Memory only: plain arrays that
// vanish with the page. Never IndexedDB, localStorage, sessionStorage or Cache Storage
// (the CBLINE promise: voice is not stored persistently on participants' devices).

export class ReplayStore {
  constructor({ limit = 5 } = {}) {
    this.limit = limit;
    this.items = []; // oldest first: {txId, meta, packets, complete, startedAt}
  }

  /** Start (or annotate) a transmission: meta such as {userId, nickname, mode}. */
  begin(txId, meta = {}) {
    const item = this.find(txId);
    if (item) {
      Object.assign(item.meta, meta);
      return item;
    }
    const created = { txId, meta: { ...meta }, packets: [], complete: false, startedAt: Date.now() };
    this.items.push(created);
    while (this.items.length > this.limit) this.items.shift();
    return created;
  }

  /** Keep one unpacked packet (protocol.unpackPacket) of a transmission. */
  add(packet) {
    const item = this.find(packet.txId) ?? this.begin(packet.txId);
    item.packets.push(packet);
    if (packet.last) item.complete = true;
    return item;
  }

  end(txId) {
    const item = this.find(txId);
    if (item) item.complete = true;
  }

  find(txId) {
    return this.items.find((i) => i.txId === txId) ?? null;
  }

  /** The packets of a transmission in order, ready for Player.replay(). */
  get(txId) {
    const item = this.find(txId);
    if (!item) return null;
    return { ...item, packets: [...item.packets].sort((a, b) => a.seq - b.seq) };
  }

  /** Newest first, without the audio. */
  list() {
    return this.items.map(({ txId, meta, complete, startedAt, packets }) => ({
      txId, meta: { ...meta }, complete, startedAt, packets: packets.length,
      durationMs: durationOf(packets),
    })).reverse();
  }

  remove(txId) {
    this.items = this.items.filter((i) => i.txId !== txId);
  }

  clear() {
    this.items = [];
  }
}

function durationOf(packets) {
  let ms = 0;
  for (const p of packets) ms += p.frames ? p.frames.length * 20 : 0;
  if (!ms && packets.length) ms = packets[packets.length - 1].captureTs - packets[0].captureTs;
  return Math.round(ms);
}
