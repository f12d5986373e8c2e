// One peer-to-peer call with the current partner. DOM-free: it takes a local MediaStream and a
// function that sends signals, and emits what the page needs to show.
//
// Negotiation follows the "perfect negotiation" pattern so a renegotiation racing the other
// side's cannot wedge the call: the "answer" role is the polite peer (it rolls back its own
// offer on a collision), the "offer" role the impolite one (it ignores the colliding offer).
// The answerer never opens the first negotiation; the server told the other side to do it.
//
// Events: "remotestream" (detail: MediaStream), "state" (detail: connectionState),
// "error" (detail: Error).

export class PeerSession extends EventTarget {
  constructor({ role, iceServers = [], localStream = null, sendSignal,
    RTCPeerConnectionImpl = globalThis.RTCPeerConnection, MediaStreamImpl = globalThis.MediaStream } = {}) {
    super();
    if (role !== "offer" && role !== "answer") throw new Error(`unknown role ${role}`);
    this.role = role;
    this.polite = role === "answer";
    this.sendSignal = sendSignal;
    this.MediaStreamImpl = MediaStreamImpl;
    this.pc = new RTCPeerConnectionImpl({ iceServers });
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.remoteSeen = false;       // the first remote description arrived
    this.pendingCandidates = [];   // remote ICE that came before a remote description
    this.remoteStream = null;
    this.closed = false;
    this.queue = Promise.resolve(); // remote signals are handled one at a time, in order
    this.bind();
    for (const track of localStream?.getTracks() ?? []) this.pc.addTrack(track, localStream);
  }

  bind() {
    const pc = this.pc;
    pc.onnegotiationneeded = () => this.negotiate();
    pc.onicecandidate = ({ candidate }) => {
      if (candidate && !this.closed) this.sendSignal({ kind: "ice", data: toJSON(candidate) });
    };
    pc.ontrack = (ev) => {
      const stream = ev.streams?.[0] ?? this.remoteStream ?? new this.MediaStreamImpl();
      if (!ev.streams?.[0]) stream.addTrack(ev.track);
      if (stream !== this.remoteStream) {
        this.remoteStream = stream;
        this.emit("remotestream", stream);
      }
    };
    pc.onconnectionstatechange = () => this.emit("state", pc.connectionState);
  }

  get connectionState() { return this.pc.connectionState; }

  async negotiate() {
    if (this.closed) return;
    if (this.polite && !this.remoteSeen) return; // the offerer starts; we answer first
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      if (!this.closed) this.sendSignal({ kind: "offer", data: toJSON(this.pc.localDescription) });
    } catch (err) {
      this.fail(err);
    } finally {
      this.makingOffer = false;
    }
  }

  // A `signal` from the partner: {kind: "offer"|"answer"|"ice", data}.
  handleSignal({ kind, data }) {
    this.queue = this.queue.then(() => this.applySignal(kind, data)).catch((err) => this.fail(err));
    return this.queue;
  }

  async applySignal(kind, data) {
    if (this.closed || !data) return;
    const pc = this.pc;
    if (kind === "ice") {
      if (!pc.remoteDescription) { this.pendingCandidates.push(data); return; }
      await this.addCandidate(data);
      return;
    }
    if (kind !== "offer" && kind !== "answer") return;
    const description = { type: data.type || kind, sdp: data.sdp };
    const collision = description.type === "offer" && (this.makingOffer || pc.signalingState !== "stable");
    this.ignoreOffer = !this.polite && collision;
    if (this.ignoreOffer) return;
    // A polite peer's own pending offer is rolled back implicitly by setRemoteDescription.
    await pc.setRemoteDescription(description);
    this.remoteSeen = true;
    await this.flushCandidates();
    if (description.type === "offer") {
      await pc.setLocalDescription();
      if (!this.closed) this.sendSignal({ kind: "answer", data: toJSON(pc.localDescription) });
    }
  }

  async flushCandidates() {
    const pending = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const candidate of pending) await this.addCandidate(candidate);
  }

  async addCandidate(candidate) {
    try {
      await this.pc.addIceCandidate(candidate);
    } catch (err) {
      if (!this.ignoreOffer) throw err; // candidates of an offer we ignored may fail; that's fine
    }
  }

  // Bytes of partner video received so far (inbound-rtp, kind video), 0 before any.
  async inboundVideoBytes() {
    if (this.closed) return 0;
    const report = await this.pc.getStats();
    let bytes = 0;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && (s.kind === "video" || s.mediaType === "video")) bytes += s.bytesReceived || 0;
    });
    return bytes;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    const pc = this.pc;
    pc.onnegotiationneeded = pc.onicecandidate = pc.ontrack = pc.onconnectionstatechange = null;
    pc.close();
    this.pendingCandidates = [];
    this.emit("state", "closed");
  }

  fail(err) {
    if (!this.closed) this.emit("error", err);
  }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}

function toJSON(x) {
  return typeof x?.toJSON === "function" ? x.toJSON() : { ...x };
}
