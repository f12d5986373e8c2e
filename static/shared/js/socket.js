// One WebSocket client for every product: JSON messages by "type", binary frames, heartbeat,
// and reconnect with backoff and jitter (docs/protocols/realtime.md, "Close codes").
//
// - A final close code (the session ended, the account may not, another window took over)
//   stops it; every other close reconnects after a randomised, growing delay, so that a
//   restarted server is not hit by every client at the same instant.
// - `send` never drops a message silently: it is sent now (true), queued until the socket is
//   back (`{ queue: true }`: "queued", sent in order after the page's own "open" handlers),
//   or refused (false), and every refusal is also told as an "unsent" event.

// Kept in step with realtime/closecodes.py FINAL (a Python test compares them).
export const FINAL_CLOSE_CODES = new Set([4001, 4401, 4403, 4409]);
export const TRY_LATER = 4429;

export function wsUrl(path, params = {}) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const url = new URL(`${proto}//${location.host}${path}`);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) url.searchParams.set(k, v);
  return url.toString();
}

// Delay before reconnect attempt `attempt` (0-based): exponential, capped, "equal jitter"
// (half fixed, half random) so that it grows yet clients spread out.
export function backoffDelay(attempt, { baseMs = 500, maxMs = 15000, random = Math.random } = {}) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** attempt);
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export class LiveSocket extends EventTarget {
  constructor(path, {
    params = {}, heartbeatMs = 25000, reconnect = true, baseMs = 500, maxMs = 15000,
    tryLaterMs = 5000, stableMs = 5000, maxQueued = 100, maxQueuedAgeMs = 30000,
  } = {}) {
    super();
    this.path = path;
    this.params = params;
    this.heartbeatMs = heartbeatMs;
    this.reconnect = reconnect;
    this.backoff = { baseMs, maxMs };
    this.tryLaterMs = tryLaterMs;
    this.stableMs = stableMs;
    this.maxQueued = maxQueued;
    this.maxQueuedAgeMs = maxQueuedAgeMs;
    this.handlers = new Map();
    this.binaryHandler = null;
    this.attempt = 0; // reconnects since the socket last stayed up for stableMs
    this.closedByUs = false;
    this.ended = false; // true once the socket will not reconnect by itself
    this.closeCode = null;
    this.outbox = []; // [{message, at}] queued while disconnected
    this.ws = null;
    this.retryTimer = null;
  }

  on(type, fn) { this.handlers.set(type, fn); return this; }
  onBinary(fn) { this.binaryHandler = fn; return this; }

  get open() { return this.ws?.readyState === WebSocket.OPEN; }

  connect() {
    clearTimeout(this.retryTimer);
    this.closedByUs = false;
    this.ended = false;
    const ws = new WebSocket(wsUrl(this.path, this.params));
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let openedAt = null;
    ws.onopen = () => {
      openedAt = Date.now();
      this.timer = setInterval(() => this.open && this.ws.send('{"type":"ping"}'), this.heartbeatMs);
      this.dispatchEvent(new Event("open"));
      this.flush();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") { this.binaryHandler?.(ev.data); return; }
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      const fn = this.handlers.get(msg.type);
      if (fn) fn(msg);
      this.dispatchEvent(new CustomEvent("message", { detail: msg }));
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return; // an old socket closing after connect() replaced it
      clearInterval(this.timer);
      this.closeCode = ev.code;
      this.ended = this.closedByUs || !this.reconnect || FINAL_CLOSE_CODES.has(ev.code);
      // A socket that stayed up a while was healthy: start the backoff over. One that the
      // server closed at once (overloaded, refusing) keeps growing it.
      if (openedAt !== null && Date.now() - openedAt >= this.stableMs) this.attempt = 0;
      let delay = null;
      if (!this.ended) {
        delay = backoffDelay(this.attempt, this.backoff);
        if (ev.code === TRY_LATER) delay = Math.max(delay, this.tryLaterMs);
        this.attempt += 1;
        this.retryTimer = setTimeout(() => this.connect(), delay);
      } else {
        this.dropOutbox("ended");
      }
      this.dispatchEvent(new CustomEvent("close", {
        detail: { code: ev.code, final: this.ended, reconnectInMs: delay },
      }));
    };
    return this;
  }

  // Sent now: true. Not open yet and `queue`: "queued" (sent after reconnecting, unless it
  // waited longer than maxQueuedAgeMs). Otherwise false, and an "unsent" event says why.
  send(message, { queue = false } = {}) {
    if (this.open) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    if (this.ended) return this.unsent(message, "ended");
    if (!queue) return this.unsent(message, "disconnected");
    if (this.outbox.length >= this.maxQueued) return this.unsent(message, "queue_full");
    this.outbox.push({ message, at: Date.now() });
    return "queued";
  }

  // Binary frames are live media: late is worse than lost, so they are never queued.
  sendBinary(buffer) {
    if (!this.open) return this.unsent(buffer, this.ended ? "ended" : "disconnected");
    this.ws.send(buffer);
    return true;
  }

  get queued() { return this.outbox.length; }

  flush() {
    const now = Date.now();
    const waiting = this.outbox;
    this.outbox = [];
    for (const { message, at } of waiting) {
      if (now - at > this.maxQueuedAgeMs) this.unsent(message, "expired");
      else if (this.open) this.ws.send(JSON.stringify(message));
      else this.outbox.push({ message, at });
    }
  }

  dropOutbox(reason) {
    const waiting = this.outbox;
    this.outbox = [];
    for (const { message } of waiting) this.unsent(message, reason);
  }

  unsent(message, reason) {
    this.dispatchEvent(new CustomEvent("unsent", { detail: { message, reason } }));
    return false;
  }

  close() {
    clearTimeout(this.retryTimer);
    this.closedByUs = true;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    else { this.ended = true; this.dropOutbox("ended"); }
  }
}
