// Test doubles for the video chat modules: an RTCPeerConnection that records what it is asked
// and follows the signalling-state rules the code relies on, and a LiveSocket stand-in.

export class FakePC {
  static instances = [];

  constructor(config) {
    this.config = config;
    this.signalingState = "stable";
    this.connectionState = "new";
    this.localDescription = null;
    this.remoteDescription = null;
    this.tracks = [];
    this.candidates = [];
    this.calls = [];
    this.closed = false;
    this.failCandidates = false;
    FakePC.instances.push(this);
  }

  addTrack(track, stream) { this.tracks.push({ track, stream }); }

  async setLocalDescription(desc) {
    this.calls.push("setLocal");
    await null;
    const type = desc?.type ?? (this.signalingState === "have-remote-offer" ? "answer" : "offer");
    this.localDescription = { type, sdp: `sdp-${type}`, toJSON() { return { type: this.type, sdp: this.sdp }; } };
    this.signalingState = type === "offer" ? "have-local-offer" : "stable";
  }

  async setRemoteDescription(desc) {
    this.calls.push(`setRemote:${desc.type}`);
    await null;
    if (desc.type === "offer" && this.signalingState === "have-local-offer") {
      this.calls.push("rollback"); // what browsers do implicitly for a polite peer
    }
    this.remoteDescription = desc;
    this.signalingState = desc.type === "offer" ? "have-remote-offer" : "stable";
  }

  async addIceCandidate(c) {
    if (this.failCandidates) throw new Error("bad candidate");
    this.candidates.push(c);
  }

  async getStats() {
    return new Map([
      ["a", { type: "inbound-rtp", kind: "audio", bytesReceived: 100 }],
      ["v", { type: "inbound-rtp", kind: "video", bytesReceived: 4200 }],
      ["o", { type: "outbound-rtp", kind: "video", bytesSent: 9 }],
    ]);
  }

  close() { this.closed = true; this.connectionState = "closed"; }
}

export class FakeSocket extends EventTarget {
  constructor() {
    super();
    this.handlers = new Map();
    this.sent = [];
    this.open = true;
  }

  on(type, fn) { this.handlers.set(type, fn); return this; }

  send(msg) {
    if (!this.open) return false;
    this.sent.push(msg);
    return true;
  }

  // The server says something.
  receive(msg) { this.handlers.get(msg.type)?.(msg); }

  types() { return this.sent.map((m) => m.type); }

  last(type) { return this.sent.filter((m) => m.type === type).at(-1); }
}

export const tick = () => new Promise((r) => setTimeout(r, 0));
