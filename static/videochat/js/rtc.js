// One peer-to-peer call with the current partner. DOM-free: it takes a local MediaStream and a
// function that sends signals, and emits what the page needs to show. The connection itself
// (tracks, candidates held for the remote description, remote stream) is the shared
// PeerConnection; this adds the video chat's signals and negotiation rules.
//
// Negotiation follows the "perfect negotiation" pattern so a renegotiation racing the other
// side's cannot wedge the call: the "answer" role is the polite peer (it rolls back its own
// offer on a collision), the "offer" role the impolite one (it ignores the colliding offer).
// The answerer never opens the first negotiation; the server told the other side to do it.
//
// Events: "remotestream" (detail: MediaStream), "state" (detail: connectionState),
// "error" (detail: Error).
import { PeerConnection } from "../../shared/js/peer.js";

export class PeerSession extends PeerConnection {
  constructor({ role, sendSignal, ...options } = {}) {
    if (role !== "offer" && role !== "answer") throw new Error(`unknown role ${role}`);
    super(options);
    this.role = role;
    this.polite = role === "answer";
    this.sendSignal = sendSignal;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.remoteSeen = false;       // the first remote description arrived
    this.queue = Promise.resolve(); // remote signals are handled one at a time, in order
    this.pc.onnegotiationneeded = () => this.negotiate();
    this.addEventListener("candidate", (e) => this.sendSignal({ kind: "ice", data: e.detail }));
  }

  async negotiate() {
    if (this.closed) return;
    if (this.polite && !this.remoteSeen) return; // the offerer starts; we answer first
    try {
      this.makingOffer = true;
      const offer = await this.describeLocal();
      if (!this.closed) this.sendSignal({ kind: "offer", data: offer });
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
    if (kind === "ice") {
      await this.addRemoteCandidate(data);
      return;
    }
    if (kind !== "offer" && kind !== "answer") return;
    const description = { type: data.type || kind, sdp: data.sdp };
    const collision = description.type === "offer" && (this.makingOffer || this.pc.signalingState !== "stable");
    this.ignoreOffer = !this.polite && collision;
    if (this.ignoreOffer) return;
    // A polite peer's own pending offer is rolled back implicitly by setRemoteDescription.
    await this.pc.setRemoteDescription(description);
    this.remoteSeen = true;
    await this.flushCandidates();
    if (description.type === "offer") {
      const answer = await this.describeLocal();
      if (!this.closed) this.sendSignal({ kind: "answer", data: answer });
    }
  }

  candidateFailed(err) {
    if (!this.ignoreOffer) throw err; // candidates of an offer we ignored may fail; that's fine
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

  fail(err) {
    if (!this.closed) this.emit("error", err);
  }
}
