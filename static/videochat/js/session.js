// The video chat session: idle → waiting → matched → ended (and back to waiting on Start,
// Next, or when the partner leaves). DOM-free: it talks to a socket with the LiveSocket
// interface (on, send, open, "open" events) and makes peers with the factory it is given.
//
// Events (CustomEvent, detail in brackets):
//   "state"   {state, previous}          every transition
//   "ready"   {me, filtersAllowed}       the server accepted our hello
//   "waiting" {expectedWaitS}            we are in the queue
//   "matched" {matchId, role, partner}   a partner was found; "peer" follows
//   "peer"    {peer}                     the PeerSession of this match (for the page's video)
//   "unmatched" {matchId, reason}        the match is over ("next" by me, or the server's reason)
//   "chat"    {line}                     a chat line of this match {from, text, lang, translation}
//   "error"   {code, detail}             the server refused something

export const STATES = Object.freeze(["idle", "waiting", "matched", "ended"]);

export class VideoChatSession extends EventTarget {
  constructor({ socket, createPeer, clientInfo = async () => ({}) }) {
    super();
    this.socket = socket;
    this.createPeer = createPeer;
    this.clientInfo = clientInfo;
    this.state = "idle";
    this.settings = null;
    this.me = null;
    this.filtersAllowed = false;
    this.iceServers = [];
    this.matchId = null;
    this.partner = null;
    this.peer = null;
    this.chatLines = [];       // lines of the current match, or of the last one after it ended
    this.lastMatchId = null;
    this.wantQueue = false;    // join the queue once the server says "ready"
    this.helloSent = false;
    this.bind();
  }

  bind() {
    const s = this.socket;
    s.on("ready", (m) => this.onReady(m))
      .on("queue.waiting", (m) => this.onWaiting(m))
      .on("queue.left", () => this.onLeft())
      .on("match.found", (m) => this.onMatchFound(m))
      .on("match.ended", (m) => this.onMatchEnded(m))
      .on("signal", (m) => this.onSignal(m))
      .on("chat", (m) => this.onChat(m))
      .on("error", (m) => this.emit("error", { code: m.code, detail: m.detail }));
    // After a reconnect the server knows nothing of us: say hello again and re-queue.
    s.addEventListener("open", () => {
      if (this.state === "waiting" || this.state === "matched") {
        this.dropMatch("disconnected");
        this.setState("waiting");
        this.wantQueue = true;
        this.sendHello();
      }
    });
  }

  // --- user actions
  async start(settings) {
    this.settings = { ...settings };
    this.wantQueue = true;
    this.setState("waiting");
    await this.sendHello();
  }

  // Update filters/language without leaving the queue (takes effect at the next match).
  async updateSettings(settings) {
    this.settings = { ...settings };
    if (this.state !== "idle" && this.state !== "ended") await this.sendHello();
  }

  next() {
    if (this.state !== "matched") return;
    // Named, so that a Next crossing a new match the server already made leaves that one alone.
    const matchId = this.matchId;
    this.dropMatch("next");
    this.setState("waiting");
    this.socket.send({ type: "next", match_id: matchId });
  }

  stop() {
    if (this.state === "idle" || this.state === "ended") return;
    this.wantQueue = false;
    this.dropMatch("left");
    this.socket.send({ type: "queue.leave" });
    this.setState("ended");
  }

  sendChat(text) {
    const clean = String(text ?? "").trim().slice(0, 500);
    if (!clean || this.state !== "matched") return false;
    return this.socket.send({ type: "chat", match_id: this.matchId, text: clean });
  }

  // What a report about the current (or last) partner carries: the lines this user saw.
  reportableChat() {
    return this.chatLines.map(({ from, text }) => ({ from, text }));
  }

  // --- server messages
  async sendHello() {
    const s = this.settings ?? {};
    const client = await this.clientInfo();
    const sent = this.socket.send({
      type: "hello",
      client,
      gender: s.gender ?? "",
      want_gender: s.wantGender || null,
      want_country: s.wantCountry || null,
      language: s.language || "en",
      translate_to: s.translateTo ?? "",
    });
    this.helloSent = sent;
    return sent;
  }

  onReady(m) {
    this.me = m.me ?? null;
    this.filtersAllowed = Boolean(m.filters_allowed);
    this.iceServers = m.ice_servers ?? [];
    this.emit("ready", { me: this.me, filtersAllowed: this.filtersAllowed });
    if (this.wantQueue && this.state === "waiting") {
      this.wantQueue = false;
      this.socket.send({ type: "queue.join" });
    }
  }

  onWaiting(m) {
    if (this.state === "idle" || this.state === "ended") return; // a late answer after Stop
    if (this.state === "matched") this.dropMatch("left");
    this.setState("waiting");
    this.emit("waiting", { expectedWaitS: m.expected_wait_s ?? null });
  }

  onLeft() {
    if (this.state !== "idle") this.setState("ended");
  }

  onMatchFound(m) {
    if (this.state === "idle" || this.state === "ended") {
      // Matched just as we pressed Stop: tell the server we are gone so the partner moves on.
      this.socket.send({ type: "queue.leave" });
      return;
    }
    this.dropMatch(null);
    this.matchId = m.match_id;
    this.lastMatchId = m.match_id;
    this.partner = m.partner ?? null;
    this.chatLines = [];
    this.setState("matched");
    this.emit("matched", { matchId: this.matchId, role: m.role, partner: this.partner });
    const matchId = m.match_id;
    this.peer = this.createPeer({
      role: m.role,
      iceServers: this.iceServers,
      sendSignal: ({ kind, data }) => this.socket.send({ type: "signal", match_id: matchId, kind, data }),
    });
    this.emit("peer", { peer: this.peer });
  }

  onMatchEnded(m) {
    if (m.match_id !== this.matchId) return;
    this.dropMatch(m.reason ?? "left");
    // The server puts the one left behind straight back in the queue.
    if (this.state === "matched") this.setState("waiting");
  }

  onSignal(m) {
    if (!this.peer || m.match_id !== this.matchId) return;
    this.peer.handleSignal({ kind: m.kind, data: m.data });
  }

  onChat(m) {
    if (m.match_id !== this.matchId) return;
    const line = { from: m.from, text: m.text, lang: m.lang ?? null, translation: m.translation ?? null };
    this.chatLines.push(line);
    this.emit("chat", { line });
  }

  // --- helpers
  dropMatch(reason) {
    if (this.peer) {
      this.peer.close();
      this.peer = null;
    }
    if (this.matchId !== null) {
      const matchId = this.matchId;
      this.matchId = null;
      this.partner = null;
      if (reason) this.emit("unmatched", { matchId, reason });
    }
  }

  setState(state) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this.emit("state", { state, previous });
  }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}
