// 1:1 calls. Media goes browser to browser over WebRTC (DTLS-SRTP; through the TURN relay when
// the two cannot reach each other, which then forwards packets it cannot read). Signalling is
// Matrix's VoIP events (m.call.invite, answer, candidates, hangup, reject), each sent as a
// Megolm-encrypted room event like a message: the server relays ciphertext and never sees an
// SDP or an address candidate. DOM-free: the page draws from the "state" events.
//
// Every device of the callee rings; the first to answer takes the call and the others stop
// when they see that answer (it reaches the callee's own devices as a room event). A device
// already in a call answers a new invite with hangup(user_busy). An invite older than its
// lifetime is never rung: a device that comes online late shows it as missed.
import { PeerConnection } from "../../shared/js/peer.js";
import { api } from "./api.js";

export const INVITE_LIFETIME_MS = 60000;
const CANDIDATE_BATCH_MS = 100; // candidates trickle in: a few events, not one each

function newCallId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function iceServers(answer) {
  const uris = answer?.uris || [];
  if (!uris.length) return [];
  const server = { urls: uris };
  if (answer.username) Object.assign(server, { username: answer.username, credential: answer.password });
  return [server];
}

export class CallManager extends EventTarget {
  constructor(client, { getUserMedia = (c) => navigator.mediaDevices.getUserMedia(c) } = {}) {
    super();
    this.client = client;
    this.getUserMedia = getUserMedia;
    this.call = null;
    this.sending = Promise.resolve(); // this device's call events, sent in order
  }

  get partyId() {
    return this.client.deviceId;
  }

  emit() {
    this.dispatchEvent(new CustomEvent("state", { detail: this.call }));
  }

  /** Call `peer` in the direct room `roomId`. */
  async place(roomId, peer, { video = false } = {}) {
    if (this.call) throw new Error("you are already in a call");
    const call = this.newCall({ id: newCallId(), roomId, peer, direction: "out", video, state: "starting" });
    try {
      await this.startMedia(call);
      const offer = await call.connection.describeLocal();
      if (call.state === "ended") return;
      call.state = "ringing";
      this.emit();
      this.send(call, "m.call.invite", {
        lifetime: INVITE_LIFETIME_MS,
        offer: { type: "offer", sdp: offer.sdp },
      });
      call.timer = setTimeout(() => this.hangup("invite_timeout"), INVITE_LIFETIME_MS);
    } catch (err) {
      this.end(call, "media_failed", err.message);
      throw err;
    }
  }

  /** Take the ringing call on this device. */
  async accept() {
    const call = this.call;
    if (!call || call.direction !== "in" || call.state !== "ringing") return;
    call.state = "connecting";
    clearTimeout(call.timer);
    this.emit();
    try {
      await this.startMedia(call);
      await call.connection.acceptRemote(call.offer);
      const answer = await call.connection.describeLocal();
      if (call.state === "ended") return;
      this.send(call, "m.call.answer", { answer: { type: "answer", sdp: answer.sdp } });
    } catch (err) {
      this.hangup("media_failed", err.message);
    }
  }

  decline() {
    const call = this.call;
    if (!call || call.direction !== "in" || call.state !== "ringing") return;
    this.send(call, "m.call.reject", {});
    this.end(call, "declined");
  }

  /** End the call from this side: the other side is told why. */
  hangup(reason = "user_hangup", detail = "") {
    const call = this.call;
    if (!call) return;
    if (call.direction === "in" && call.state === "ringing") return this.decline();
    this.send(call, "m.call.hangup", { reason });
    this.end(call, reason, detail);
  }

  toggleMute() {
    const call = this.call;
    if (!call?.localStream) return;
    call.muted = !call.muted;
    for (const track of call.localStream.getAudioTracks()) track.enabled = !call.muted;
    this.emit();
  }

  toggleCamera() {
    const call = this.call;
    if (!call?.localStream) return;
    call.cameraOff = !call.cameraOff;
    for (const track of call.localStream.getVideoTracks()) track.enabled = !call.cameraOff;
    this.emit();
  }

  /** A decrypted m.call.* room event (client.js), from anyone in any room. */
  onEvent({ roomId, sender, type, content, ts }) {
    const mine = sender === this.client.userId;
    const call = this.call;
    const current = call && call.id === content.call_id ? call : null;
    if (type === "m.call.invite") {
      if (mine || Date.now() - ts > (content.lifetime || INVITE_LIFETIME_MS)) return;
      if (call && !current && this.crossed(call, roomId, sender)) {
        // Both called each other at once ("glare"): each side keeps the call with the lower
        // id, so both end up in the same one. Ours loses: dropped, and theirs taken.
        if (call.id < content.call_id) return; // ours wins: they will take it
        this.send(call, "m.call.hangup", { reason: "replaced" });
        this.end(call, "replaced");
      } else if (call) {
        if (!current) this.sendFor(roomId, content.call_id, "m.call.hangup", { reason: "user_busy" });
        return;
      }
      const video = /\nm=video /.test(content.offer?.sdp || "");
      const incoming = this.newCall({ id: content.call_id, roomId, peer: sender, direction: "in", video, state: "ringing" });
      incoming.offer = content.offer;
      incoming.remoteParty = content.party_id;
      incoming.timer = setTimeout(() => this.end(incoming, "missed"), content.lifetime || INVITE_LIFETIME_MS);
      this.emit();
      if (call?.reason === "replaced") this.accept(); // we were calling them: no need to ring
      return;
    }
    if (!current) return;
    if (mine) {
      // Another device of mine took or refused this call: this one stops ringing.
      if (current.direction === "in" && current.state === "ringing" && content.party_id !== this.partyId) {
        this.end(current, type === "m.call.answer" ? "answered_elsewhere" : "declined");
      }
      return;
    }
    if (current.remoteParty && content.party_id && content.party_id !== current.remoteParty) return;
    if (type === "m.call.answer" && current.direction === "out" && current.state === "ringing") {
      current.remoteParty = content.party_id;
      clearTimeout(current.timer);
      current.state = "connecting";
      this.emit();
      current.connection.acceptRemote(content.answer).catch((err) => this.hangup("ice_failed", err.message));
    } else if (type === "m.call.candidates") {
      // Before this device takes the call there is no connection yet: they wait in the call.
      if (current.connection) for (const candidate of content.candidates || []) current.connection.addRemoteCandidate(candidate);
      else current.remoteCandidates.push(...(content.candidates || []));
    } else if (type === "m.call.hangup" || type === "m.call.reject") {
      this.end(current, type === "m.call.reject" ? "declined" : content.reason || "user_hangup");
    }
  }

  // --- inside
  /** Is `call` our own, still unanswered call to the one who now calls us, in that room? */
  crossed(call, roomId, sender) {
    return call.direction === "out" && ["starting", "ringing"].includes(call.state) && call.peer === sender && call.roomId === roomId;
  }

  newCall(fields) {
    this.call = {
      ...fields,
      connection: null, // the PeerConnection, once this device takes part
      localStream: null,
      remoteStream: null,
      remoteCandidates: [],
      outCandidates: [],
      candidateTimer: null,
      timer: null,
      muted: false,
      cameraOff: false,
      connectedAt: null,
      reason: null,
      detail: "",
    };
    return this.call;
  }

  async startMedia(call) {
    const servers = await api("GET", "voip/turnServer").catch(() => ({}));
    call.localStream = await this.getUserMedia({ audio: true, video: call.video });
    if (call.state === "ended") {
      for (const track of call.localStream.getTracks()) track.stop();
      return;
    }
    // A stale remote candidate is harmless: the call goes on with the others.
    const connection = new PeerConnection({ iceServers: iceServers(servers), localStream: call.localStream, ignoreCandidateErrors: true });
    call.connection = connection;
    for (const candidate of call.remoteCandidates.splice(0)) connection.addRemoteCandidate(candidate);
    connection.addEventListener("candidate", ({ detail: candidate }) => {
      if (!candidate.candidate) return;
      call.outCandidates.push(candidate);
      call.candidateTimer ??= setTimeout(() => {
        call.candidateTimer = null;
        const candidates = call.outCandidates.splice(0);
        if (candidates.length && call.state !== "ended") this.send(call, "m.call.candidates", { candidates });
      }, CANDIDATE_BATCH_MS);
    });
    connection.addEventListener("remotestream", ({ detail: stream }) => {
      call.remoteStream = stream;
      this.emit();
    });
    connection.addEventListener("state", ({ detail: state }) => {
      if (state === "connected" && call.state !== "connected") {
        call.state = "connected";
        call.connectedAt = Date.now();
        this.emit();
      } else if (state === "failed" && call.state !== "ended") {
        this.hangup("ice_failed", "the connection failed");
      }
    });
    this.emit();
  }

  send(call, type, content) {
    this.sendFor(call.roomId, call.id, type, content);
  }

  sendFor(roomId, callId, type, content) {
    const full = { call_id: callId, party_id: this.partyId, version: "1", ...content };
    this.sending = this.sending
      .then(() => this.client.sendCallEvent(roomId, type, full))
      .catch((err) => console.warn("call event not sent", type, err));
  }

  end(call, reason, detail = "") {
    if (call.state === "ended") return;
    call.state = "ended";
    call.reason = reason;
    call.detail = detail;
    clearTimeout(call.timer);
    clearTimeout(call.candidateTimer);
    call.connection?.close();
    for (const track of call.localStream?.getTracks() || []) track.stop();
    this.emit();
    if (this.call === call) this.call = null;
  }
}
