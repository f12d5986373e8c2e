// One RTCPeerConnection and the plumbing every product repeats around it, DOM-free: the
// connection with the given ICE servers, the local tracks, the local description (offer, or
// the answer to a remote offer), remote ICE candidates held until there is a remote
// description to apply them to, the remote stream, close. Signalling and its rules stay with
// each product (videochat/js/rtc.js, messaging/js/calls.js): this sends nothing itself.
//
// Events: "candidate" (detail: a local ICE candidate as JSON), "remotestream" (detail:
// MediaStream, once per stream), "state" (detail: connectionState; "closed" on close()).

export class PeerConnection extends EventTarget {
  constructor({ iceServers = [], localStream = null, ignoreCandidateErrors = false,
    RTCPeerConnectionImpl = globalThis.RTCPeerConnection, MediaStreamImpl = globalThis.MediaStream } = {}) {
    super();
    this.MediaStreamImpl = MediaStreamImpl;
    this.ignoreCandidateErrors = ignoreCandidateErrors;
    this.pc = new RTCPeerConnectionImpl({ iceServers });
    this.pendingCandidates = []; // remote ICE that came before a remote description
    this.remoteStream = null;
    this.closed = false;
    const pc = this.pc;
    pc.onicecandidate = ({ candidate }) => {
      if (candidate && !this.closed) this.emit("candidate", toJSON(candidate));
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
    for (const track of localStream?.getTracks() ?? []) pc.addTrack(track, localStream);
  }

  get connectionState() { return this.pc.connectionState; }

  /** Set the local description (an offer, or the answer to the remote offer) and return it as JSON. */
  async describeLocal() {
    await this.pc.setLocalDescription();
    return toJSON(this.pc.localDescription);
  }

  /** Apply the other side's offer or answer, then the candidates that waited for it. */
  async acceptRemote(description) {
    await this.pc.setRemoteDescription(description);
    await this.flushCandidates();
  }

  /** A remote ICE candidate: applied now, or held until the remote description is set. */
  async addRemoteCandidate(candidate) {
    if (this.closed) return;
    if (!this.pc.remoteDescription) {
      this.pendingCandidates.push(candidate);
      return;
    }
    await this.addCandidate(candidate);
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
      this.candidateFailed(err);
    }
  }

  // A candidate the connection refused: an error unless the owner said stale ones are harmless.
  candidateFailed(err) {
    if (!this.ignoreCandidateErrors) throw err;
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

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}

export function toJSON(x) {
  return typeof x?.toJSON === "function" ? x.toJSON() : { ...x };
}
