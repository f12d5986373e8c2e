// One WebSocket client for every product: JSON messages by "type", binary frames, heartbeat,
// and reconnect with backoff. No reconnect after the server says the session is over.
const FINAL_CLOSE_CODES = new Set([4001, 4401, 4403]);

export function wsUrl(path, params = {}) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const url = new URL(`${proto}//${location.host}${path}`);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) url.searchParams.set(k, v);
  return url.toString();
}

export class LiveSocket extends EventTarget {
  constructor(path, { params = {}, heartbeatMs = 25000, reconnect = true } = {}) {
    super();
    this.path = path;
    this.params = params;
    this.heartbeatMs = heartbeatMs;
    this.reconnect = reconnect;
    this.handlers = new Map();
    this.binaryHandler = null;
    this.backoff = 500;
    this.closedByUs = false;
    this.ended = false; // true once the socket will not reconnect by itself
    this.ws = null;
  }

  on(type, fn) { this.handlers.set(type, fn); return this; }
  onBinary(fn) { this.binaryHandler = fn; return this; }

  get open() { return this.ws?.readyState === WebSocket.OPEN; }

  connect() {
    this.closedByUs = false;
    this.ended = false;
    const ws = new WebSocket(wsUrl(this.path, this.params));
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 500;
      this.timer = setInterval(() => this.send({ type: "ping" }), this.heartbeatMs);
      this.dispatchEvent(new Event("open"));
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
      clearInterval(this.timer);
      this.ended = this.closedByUs || !this.reconnect || FINAL_CLOSE_CODES.has(ev.code);
      this.dispatchEvent(new CustomEvent("close", { detail: { code: ev.code, final: this.ended } }));
      if (this.ended) return;
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10000);
    };
    return this;
  }

  send(message) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  sendBinary(buffer) {
    if (!this.open) return false;
    this.ws.send(buffer);
    return true;
  }

  close() {
    this.closedByUs = true;
    this.ws?.close(1000);
  }
}
