// CBLINE page controller (entry of /cbline/): channel list, search and create; the channel
// view with members, the hold-to-talk button (mouse, touch, space bar), the talking
// indicator and busy tone, location sharing with its range, and replay of the last few
// received transmissions.
//
// Audio work is in the DOM-free media modules (capture, protocol, player, replay-store).
// Voice is kept in this page's memory only: nothing here touches IndexedDB, localStorage,
// sessionStorage or Cache Storage.

import { LiveSocket } from "../../shared/js/socket.js";
import { describeThisDevice } from "../../shared/js/device.js";
import { Capture, VOICE_CONSTRAINTS } from "./media/capture.js";
import { packPacket, unpackPacket } from "./media/protocol.js";
import { Player } from "./media/player.js";
import { ReplayStore } from "./media/replay-store.js";
import { flag, icon } from "../../shared/js/icons.js";

const REPLAY_LIMIT = 5;
// Longest a release waits for the capture's last packet (its recorder path alone may take 1.25 s).
const STOP_WAIT_MS = 1500;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const root = document.querySelector("[data-controller=cbline]");
if (root) start(root);

function start(root) {
  const $ = (sel) => root.querySelector(sel);
  const ui = {
    channelList: $("[data-cb-channel-list]"), search: $("[data-cb-search]"),
    createToggle: $("[data-cb-create-toggle]"), createForm: $("[data-cb-create]"),
    identityForm: $("[data-cb-identity]"), identityEdit: $("[data-cb-identity-edit]"),
    identityFields: $("[data-cb-identity-fields]"), nicknameLabel: $("[data-cb-nickname-label]"),
    descriptionLabel: $("[data-cb-description-label]"), avatar: $("[data-cb-avatar]"),
    empty: $("[data-cb-empty]"), channel: $("[data-cb-channel]"),
    channelName: $("[data-cb-channel-name]"), channelDescription: $("[data-cb-channel-description]"),
    leave: $("[data-cb-leave]"), status: $("[data-cb-status]"), statusText: $("[data-cb-status-text]"),
    ptt: $("[data-cb-ptt]"), pttLabel: $("[data-cb-ptt-label]"), level: $("[data-cb-level]"),
    location: $("[data-cb-location]"), range: $("[data-cb-range]"),
    members: $("[data-cb-members]"), memberCount: $("[data-cb-member-count]"),
    replays: $("[data-cb-replays]"),
    pwDialog: $("[data-cb-password-dialog]"), pwForm: $("[data-cb-password-form]"),
    pwChannel: $("[data-cb-password-channel]"), pwError: $("[data-cb-password-error]"),
    pwCancel: $("[data-cb-password-cancel]"), toast: $("[data-cb-toast]"),
    notice: $("[data-cb-notice]"), conn: $("[data-cb-conn]"),
    modTools: $("[data-cb-mod-tools]"), modMinutes: $("[data-cb-mod-minutes]"),
    bansCard: $("[data-cb-bans-card]"), bans: $("[data-cb-bans]"),
  };
  const urls = { channels: root.dataset.channelsUrl, identity: root.dataset.identityUrl };
  const csrf = () => document.querySelector("meta[name=csrf-token]")?.content || "";

  // --- state
  const state = {
    channel: null, // {id, name, description, range_km, is_protected}
    me: null, // {user_id, has_location, range_km, is_moderator}
    members: new Map(), // user_id -> member
    memberCount: 0,
    talker: null, // {user_id, nickname, tx_id, in_range}: user_id null when out of range
    recentOnServer: [], // from channel.joined: transmissions still held by the server
    myCountry: null,
    pendingJoin: null, // {channelId, password}
    channels: [],
    everOpen: false, // the socket has been open once: a later close is a reconnect
    leaving: null, // why the channel view is about to close: {text}
  };
  const counters = { sent: 0, received: 0, replayed: 0, busy: 0, errors: 0, releases: 0, slowStops: 0 };
  const store = new ReplayStore({ limit: REPLAY_LIMIT });
  const player = new Player({ onLevel: (v) => showLevel(v) });
  let fetching = null; // tx id of a tx.fetch in progress

  // --- socket
  const socket = new LiveSocket("/ws/cbline/");
  socket.addEventListener("open", () => {
    // After a reconnect, get back into the channel (a member needs no password again) and
    // pick up what was missed while away (tx.fetch after channel.joined).
    if (state.channel) socket.send({ type: "channel.join", channel_id: state.channel.id, password: null });
    if (geo.sharing) geo.send();
    state.everOpen = true;
    setStatus();
  });
  socket.addEventListener("close", () => {
    if (talk.active) talk.abort();
    setStatus();
  });
  socket.on("channel.joined", onJoined);
  socket.on("channel.left", () => leaveView());
  socket.on("member.joined", (m) => {
    if (!state.members.has(m.member.user_id)) state.memberCount++;
    state.members.set(m.member.user_id, m.member);
    renderMembers();
  });
  socket.on("member.updated", (m) => { state.members.set(m.member.user_id, m.member); renderMembers(); });
  socket.on("member.left", (m) => {
    if (state.members.delete(m.user_id)) state.memberCount--;
    renderMembers();
  });
  socket.on("location.ok", (m) => {
    state.myCountry = m;
    if (state.me) state.me.has_location = m.has_location;
    renderRange();
  });
  socket.on("floor.granted", (m) => talk.granted(m));
  socket.on("floor.taken", onFloorTaken);
  socket.on("floor.released", onFloorReleased);
  socket.on("tx.replay", (m) => {
    fetching = m.tx_id;
    store.remove(m.tx_id);
    store.begin(m.tx_id, { userId: m.user_id, nickname: m.nickname, mode: m.mode, missed: true });
  });
  socket.on("tx.replay.end", (m) => {
    fetching = null;
    store.end(m.tx_id);
    counters.replayed++;
    renderReplays();
  });
  socket.on("moderated", (m) => {
    const until = m.until ? ` until ${new Date(m.until).toLocaleString()}` : "";
    const name = state.channel?.name || "the channel";
    if (m.action === "unmuted") { toast("A moderator unmuted you: you can talk again.", "info"); return; }
    if (m.action === "muted") {
      toast(`A moderator muted you in ${name}${until || " until they unmute you"}.`);
      if (talk.active) talk.abort();
      return;
    }
    // A kick or ban: channel.left follows and the view closes with this message.
    state.leaving = {
      kind: m.action,
      text: m.action === "kicked"
        ? `A moderator removed you from ${name}. You may join it again.`
        : `A moderator banned you from ${name}${until || " with no end date"}.`,
    };
  });
  socket.on("mod.ok", (m) => {
    toast(`Done: ${m.action}.`, "info");
    if (m.action === "banned" || m.action === "unbanned") socket.send({ type: "mod.bans" });
  });
  socket.on("mod.bans", (m) => renderBans(m.bans));
  socket.on("error", onError);
  socket.onBinary(onPacket);

  function onError(m) {
    counters.errors++;
    if (m.code === "busy") {
      talk.busy();
      return;
    }
    if (state.pendingJoin && ["password_required", "wrong_password"].includes(m.code)) {
      askPassword(state.pendingJoin.channelId, m.code === "wrong_password" ? "Wrong password." : "");
      return;
    }
    if (m.code === "no_floor" && !talk.active) return; // stragglers after a timeout
    if (m.code === "location_too_frequent") {
      // A refresh after a move: the server keeps the last place and the next refresh
      // tries again. Said only when no place is in effect yet (switched off and on).
      if (!state.me?.has_location) toast(m.detail || m.code);
      return;
    }
    if (talk.requesting) talk.abort();
    state.pendingJoin = null;
    toast(m.detail || m.code);
  }

  // --- channels
  async function loadChannels(q = "") {
    const resp = await fetch(`${urls.channels}?q=${encodeURIComponent(q)}`, { credentials: "same-origin" });
    if (!resp.ok) return;
    state.channels = (await resp.json()).channels;
    renderChannelList();
  }

  function renderChannelList() {
    ui.channelList.replaceChildren();
    if (!state.channels.length) {
      ui.channelList.append(el("li", { class: "cb-empty-list" }, "No channels found."));
      return;
    }
    for (const c of state.channels) {
      const btn = el("button", { type: "button", "data-channel-id": c.id, "data-testid": `cb-channel-${c.id}` },
        el("span", { class: "cb-chan-icon" }, icon(c.is_protected ? "lock" : "radio", c.is_protected ? "Password" : "")),
        el("span", { class: "cb-chan-text" },
          el("strong", {}, c.name),
          el("small", {}, [c.range_km ? `${c.range_km} km range` : "Unlimited range", c.description].filter(Boolean).join(" · "))));
      if (state.channel?.id === c.id) btn.setAttribute("aria-current", "true");
      btn.addEventListener("click", () => requestJoin(c));
      ui.channelList.append(el("li", {}, btn));
    }
  }

  function requestJoin(c) {
    if (state.channel?.id === c.id) return;
    if (c.is_protected && !c.is_member) askPassword(c.id, "");
    else join(c.id, null);
  }

  function join(channelId, password) {
    player.resume().catch(() => {}); // a click: the moment browsers allow audio to start
    state.pendingJoin = { channelId, password };
    socket.send({ type: "channel.join", channel_id: channelId, password });
  }

  function askPassword(channelId, error) {
    const c = state.channels.find((x) => x.id === channelId);
    ui.pwChannel.textContent = c ? c.name : "";
    ui.pwError.textContent = error;
    ui.pwForm.dataset.channelId = String(channelId);
    ui.pwForm.reset();
    if (!ui.pwDialog.open) ui.pwDialog.showModal();
  }

  ui.pwForm.addEventListener("submit", () => {
    const password = new FormData(ui.pwForm).get("password");
    join(Number(ui.pwForm.dataset.channelId), String(password));
  });
  ui.pwCancel.addEventListener("click", () => { state.pendingJoin = null; ui.pwDialog.close(); });

  function onJoined(m) {
    const switched = state.channel?.id !== m.channel.id;
    if (switched) {
      player.reset();
      store.clear();
      // Joining is a click: set up the capture graph now, not on the first press.
      Capture.warmUp().catch(() => {});
    }
    state.pendingJoin = null;
    state.channel = m.channel;
    state.me = m.me;
    state.me.has_location = geo.sharing || m.me.has_location;
    state.members = new Map(m.members.map((x) => [x.user_id, x]));
    state.memberCount = m.member_count; // a big channel lists only part of its members
    state.talker = m.talker;
    state.recentOnServer = m.recent;
    if (ui.pwDialog.open) ui.pwDialog.close();
    const known = state.channels.find((c) => c.id === m.channel.id);
    if (known) known.is_member = true;
    ui.empty.hidden = true;
    ui.notice.hidden = true;
    ui.channel.hidden = false;
    root.dataset.inChannel = "true";
    ui.channelName.replaceChildren(m.channel.name, ...(m.channel.is_protected ? [" ", icon("lock", "Password protected")] : []));
    ui.channelDescription.textContent = m.channel.description;
    renderChannelList();
    renderMembers();
    renderRange();
    renderReplays();
    setStatus();
    const mod = !!m.me.is_moderator;
    ui.modTools.hidden = ui.bansCard.hidden = !mod;
    if (mod) socket.send({ type: "mod.bans" });
    // Reconnected mid-transmission: fetch the ones we heard begin but not end.
    for (const r of m.recent) {
      const item = store.find(r.tx_id);
      if (item && !item.complete) socket.send({ type: "tx.fetch", tx_id: r.tx_id });
    }
  }

  function leaveView() {
    const name = state.channel?.name || "the channel";
    const why = state.leaving || { kind: "left", text: `You left ${name}.` };
    state.leaving = null;
    if (talk.active) talk.abort();
    talk.stopMicrophone();
    player.reset();
    store.clear();
    state.channel = state.me = state.talker = null;
    state.members.clear();
    state.memberCount = 0;
    state.recentOnServer = [];
    // Nothing of the old channel stays on screen: its name, members, replays, talk button.
    ui.channelName.replaceChildren();
    ui.channelDescription.textContent = "";
    ui.members.replaceChildren();
    ui.replays.replaceChildren();
    ui.bans.replaceChildren();
    ui.modTools.hidden = ui.bansCard.hidden = true;
    ui.channel.hidden = true;
    ui.empty.hidden = false;
    ui.notice.textContent = why.text;
    ui.notice.dataset.kind = why.kind;
    ui.notice.hidden = false;
    root.dataset.inChannel = "false";
    renderChannelList();
    setStatus();
  }

  ui.leave.addEventListener("click", () => {
    state.leaving = { kind: "left", text: `You left ${state.channel?.name || "the channel"}.` };
    socket.send({ type: "channel.leave" });
  });

  let searchTimer = null;
  ui.search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => loadChannels(ui.search.value.trim()), 200);
  });

  ui.createToggle.addEventListener("click", () => {
    ui.createForm.hidden = !ui.createForm.hidden;
    ui.createToggle.setAttribute("aria-expanded", String(!ui.createForm.hidden));
    if (!ui.createForm.hidden) ui.createForm.querySelector("input").focus();
  });

  ui.createForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const resp = await fetch(urls.channels, {
      method: "POST", body: new FormData(ui.createForm), credentials: "same-origin",
      headers: { "X-CSRFToken": csrf() },
    });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) { toast(body.detail || "Could not create the channel."); return; }
    ui.createForm.reset();
    ui.createForm.hidden = true;
    ui.createToggle.setAttribute("aria-expanded", "false");
    await loadChannels(ui.search.value.trim());
    join(body.channel.id, null);
  });

  // --- identity
  ui.identityEdit.addEventListener("click", () => {
    ui.identityFields.hidden = !ui.identityFields.hidden;
    ui.identityEdit.setAttribute("aria-expanded", String(!ui.identityFields.hidden));
  });
  ui.identityForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const resp = await fetch(urls.identity, {
      method: "POST", body: new FormData(ui.identityForm), credentials: "same-origin",
      headers: { "X-CSRFToken": csrf() },
    });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) { toast(body.detail || "Could not save."); return; }
    ui.nicknameLabel.textContent = body.nickname;
    ui.descriptionLabel.textContent = body.description || "No description";
    ui.avatar.textContent = body.nickname.slice(0, 1).toUpperCase();
    ui.identityFields.hidden = true;
    ui.identityEdit.setAttribute("aria-expanded", "false");
  });

  // --- members
  function renderMembers() {
    const list = [...state.members.values()].sort((a, b) => a.nickname.localeCompare(b.nickname));
    ui.memberCount.textContent = String(Math.max(state.memberCount || 0, list.length));
    ui.members.replaceChildren(...list.map((m) => {
      const me = m.user_id === state.me?.user_id;
      const text = el("span", { class: "cb-member-text" },
        el("strong", {}, m.nickname + (me ? " (you)" : ""),
          m.is_moderator ? el("span", { class: "cb-tag" }, "mod") : "",
          m.muted ? el("span", { class: "cb-tag muted" }, "muted") : ""),
        el("small", {}, [m.country_name, m.description].filter(Boolean).join(" · ") || "—"));
      const li = el("li", { "data-user-id": m.user_id, "data-talking": String(state.talker?.user_id === m.user_id) },
        el("span", { class: "cb-flag", title: m.country_name || "Country unknown" }, flag(m.country, m.country_name)), text);
      if (state.me?.is_moderator && !me) {
        const mod = el("span", { class: "cb-mod" });
        const actions = [m.muted ? ["mod.unmute", "Unmute", ""] : ["mod.mute", "Mute", ""],
          ["mod.kick", "Kick", ""], ["mod.ban", "Ban", "danger"]];
        for (const [type, label, cls] of actions) {
          const b = el("button", { type: "button", class: cls, title: `${label} ${m.nickname}` }, label);
          b.addEventListener("click", () => {
            if ((type === "mod.kick" || type === "mod.ban") && !confirm(`${label} ${m.nickname}?`)) return;
            const timed = type === "mod.mute" || type === "mod.ban";
            const minutes = Number(ui.modMinutes.value || 0); // 0: until a moderator lifts it
            socket.send(timed ? { type, user_id: m.user_id, minutes } : { type, user_id: m.user_id });
          });
          mod.append(b);
        }
        li.append(mod);
      }
      return li;
    }));
  }

  function renderBans(bans) {
    if (!bans.length) {
      ui.bans.replaceChildren(el("li", { class: "muted-text" }, "Nobody is banned."));
      return;
    }
    ui.bans.replaceChildren(...bans.map((b) => {
      const until = b.until ? `until ${new Date(b.until).toLocaleString()}` : "until lifted";
      const unban = el("button", { type: "button", class: "secondary", title: `Unban ${b.nickname}` }, "Unban");
      unban.addEventListener("click", () => socket.send({ type: "mod.unban", user_id: b.user_id }));
      return el("li", { "data-user-id": b.user_id },
        el("span", { class: "cb-member-text" }, el("strong", {}, b.nickname), el("small", {}, until)),
        el("span", { class: "cb-mod" }, unban));
    }));
  }

  // --- floor and talking indicator
  // Settings, from the page (VOICE_MAX_TRANSMISSION_SECONDS): no default of our own here.
  const maxMs = Number(root.dataset.maxSeconds) * 1000;
  let talkerTimer = null;

  function onFloorTaken(m) {
    state.talker = { user_id: m.user_id, nickname: m.nickname, tx_id: m.tx_id, in_range: m.in_range !== false };
    // If the talker's server process dies, no floor.released ever comes: the floor expires
    // on the server after the maximum length, and so does the indicator here.
    clearTimeout(talkerTimer);
    talkerTimer = setTimeout(() => {
      if (state.talker?.tx_id === m.tx_id) { state.talker = null; setStatus(); renderMembers(); }
    }, maxMs + 3000);
    // Out of range: nothing will arrive, so nothing to list or replay.
    if (state.talker.in_range) store.begin(m.tx_id, { userId: m.user_id, nickname: m.nickname, mode: m.mode });
    setStatus();
    renderMembers();
  }

  function onFloorReleased(m) {
    if (state.talker?.tx_id === m.tx_id) state.talker = null;
    if (m.in_range === false) { setStatus(); renderMembers(); return; }
    if (talk.txId === m.tx_id && talk.active) talk.abort(m.reason === "timeout" ? "Maximum length reached." : "");
    else player.endTransmission(m.tx_id);
    store.end(m.tx_id);
    const item = store.find(m.tx_id);
    if (item) item.meta.durationMs = m.duration_ms;
    setStatus();
    renderMembers();
    renderReplays();
  }

  function setStatus() {
    let st = "idle";
    let text = state.channel ? "Channel is quiet" : "";
    let conn = "open";
    let connText = "Connected";
    if (!socket.open) {
      st = "offline";
      conn = socket.ended ? "offline" : "connecting";
      // After a logout elsewhere (or a refused connection) nothing will reconnect by itself.
      if (socket.ended) text = "Disconnected. Reload the page to connect again.";
      else text = state.everOpen ? "Reconnecting…" : "Connecting…";
      connText = text;
    }
    else if (talk.active) { st = "me"; text = "You are talking"; }
    else if (state.talker && !state.talker.in_range) { st = "busy"; text = "Someone out of your range is talking"; }
    else if (state.talker) { st = "talking"; text = `${state.talker.nickname} is talking`; }
    ui.status.dataset.state = st;
    ui.statusText.textContent = text;
    ui.conn.dataset.state = conn;
    ui.conn.textContent = connText;
    let ptt = "idle";
    let label = "Hold to talk";
    if (talk.active) { ptt = "talking"; label = "Talking…"; }
    else if (talk.requesting) { ptt = "requesting"; label = "…"; }
    else if (talk.busyUntil > performance.now()) { ptt = "busy"; label = "Busy"; }
    else if (state.talker && !state.talker.in_range) { ptt = "busy"; label = "Channel busy"; }
    else if (state.talker) { ptt = "listening"; label = "Listening"; }
    ui.ptt.dataset.state = ptt;
    ui.pttLabel.textContent = label;
    ui.ptt.disabled = !state.channel || !socket.open;
  }

  // --- received audio
  function onPacket(buffer) {
    let p;
    try { p = unpackPacket(buffer); } catch { return; }
    counters.received++;
    store.add(p);
    if (fetching === p.txId) return; // a downloaded transmission: played from the list
    try { player.push(p); } catch { /* the player is not initialised until a gesture */ }
    if (p.last) renderReplays();
  }

  function showLevel(v) {
    ui.level.style.width = `${Math.min(100, Math.round(v * 400))}%`;
  }

  function renderReplays() {
    // A transmission that ended with no audio (a press without sound) leaves nothing to play.
    const heard = store.list().filter((r) => r.packets > 0 || !r.complete);
    const items = heard.map((r) => {
      const b = el("button", { type: "button", class: "secondary", "data-testid": `cb-replay-${r.txId}` }, icon("play"), " Play");
      b.addEventListener("click", async () => {
        await player.resume();
        const full = store.get(r.txId);
        if (full?.packets.length) player.replay(full.packets);
      });
      const secs = Math.max(1, Math.round((r.meta.durationMs || r.durationMs || 0) / 1000));
      return el("li", {},
        el("span", { class: "cb-member-text" },
          el("strong", {}, r.meta.nickname || "Someone"),
          el("small", {}, r.complete
            ? `${new Date(r.startedAt).toLocaleTimeString()} · ${secs} s${r.meta.missed ? " · missed, downloaded" : ""}`
            : "receiving…")),
        r.packets && r.complete ? b : "");
    });
    // Missed transmissions the server still holds: offer to download them.
    for (const r of state.recentOnServer) {
      if (store.find(r.tx_id) || r.user_id === state.me?.user_id) continue;
      // The server lists only what this user may fetch (heard it live, or would have).
      const b = el("button", { type: "button", class: "secondary", "data-testid": `cb-fetch-${r.tx_id}` }, icon("download"), " Fetch");
      b.addEventListener("click", () => socket.send({ type: "tx.fetch", tx_id: r.tx_id }));
      items.push(el("li", {},
        el("span", { class: "cb-member-text" }, el("strong", {}, r.nickname),
          el("small", {}, `${new Date(r.started_at).toLocaleTimeString()} · on the server for a few seconds`)), b));
    }
    if (!items.length) items.push(el("li", { class: "muted-text" }, "Nothing received yet."));
    ui.replays.replaceChildren(...items);
  }

  // --- talking: press, grant, capture, release
  const talk = {
    pressed: false, requesting: false, active: false, txId: null, capture: null, stream: null,
    seq: 0, timer: null, busyUntil: 0, maxMs: 0,

    async press() {
      if (this.pressed || !state.channel || !socket.open) return;
      this.pressed = true;
      player.resume().catch(() => {});
      if (state.talker && (!state.talker.in_range || state.talker.user_id !== state.me?.user_id)) { this.busy(); return; }
      this.requesting = true;
      setStatus();
      const mode = Capture.preferredMode();
      if (!mode) { this.requesting = false; toast("This browser cannot record audio."); return; }
      // Ask for the floor and the microphone at once: whichever is slower sets the delay.
      this.micReady = this.microphone().catch((err) => { toast(`Microphone: ${err.message}`); return null; });
      socket.send({ type: "floor.request", mode });
    },

    async microphone() {
      if (this.stream?.getAudioTracks().some((t) => t.readyState === "live")) return this.stream;
      this.stream = await navigator.mediaDevices.getUserMedia(VOICE_CONSTRAINTS);
      return this.stream;
    },

    async granted(m) {
      this.requesting = false;
      this.txId = m.tx_id;
      this.maxMs = m.max_ms;
      if (!this.pressed) { socket.send({ type: "floor.release", tx_id: m.tx_id }); this.txId = null; return; }
      const stream = await this.micReady;
      if (!stream || !this.pressed || this.txId !== m.tx_id) {
        socket.send({ type: "floor.release", tx_id: m.tx_id });
        this.txId = null;
        setStatus();
        return;
      }
      this.active = true;
      this.seq = 0;
      const txId = m.tx_id;
      this.capture = new Capture({
        packetMs: m.packet_ms,
        onLevel: (v) => showLevel(v),
        onPacket: (kind, data, captureTs, last) => {
          if (this.seq > 0xffff) return;
          const packet = packPacket({ kind, last, seq: this.seq++, txId, captureTs,
            ...(kind === 1 ? { frames: data } : { chunk: data }) });
          if (socket.sendBinary(packet)) counters.sent++;
        },
      });
      this.timer = setTimeout(() => this.release(), this.maxMs);
      setStatus();
      try {
        await this.capture.start(stream);
      } catch (err) {
        toast(`Could not start the microphone: ${err.message}`);
        this.release();
      }
    },

    async release() {
      this.pressed = false;
      clearTimeout(this.timer);
      if (!this.active) { setStatus(); return; }
      this.active = false;
      const txId = this.txId;
      const capture = this.capture;
      this.capture = null;
      setStatus();
      // The others wait for this release: an encoder or track reader that stalls (a busy
      // machine, a device gone) may cost the last packet, never the release.
      const stopped = capture?.stop().then(() => true, () => true) ?? Promise.resolve(true);
      if (!(await Promise.race([stopped, sleep(STOP_WAIT_MS).then(() => false)]))) counters.slowStops++;
      if (txId !== null) { socket.send({ type: "floor.release", tx_id: txId }); counters.releases++; }
      this.txId = null;
      showLevel(0);
    },

    abort(message = "") {
      this.pressed = false;
      this.requesting = false;
      clearTimeout(this.timer);
      const capture = this.capture;
      this.capture = null;
      this.active = false;
      this.txId = null;
      capture?.stop().catch(() => {});
      if (message) toast(message, "info");
      setStatus();
    },

    busy() {
      counters.busy++;
      this.requesting = false;
      this.pressed = false;
      this.busyUntil = performance.now() + 900;
      busyTone();
      setStatus();
      setTimeout(setStatus, 950);
    },

    stopMicrophone() {
      for (const t of this.stream?.getTracks() || []) t.stop();
      this.stream = null;
    },
  };

  ui.ptt.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    ev.preventDefault();
    ui.ptt.setPointerCapture?.(ev.pointerId);
    talk.press();
  });
  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
    ui.ptt.addEventListener(type, () => { if (talk.pressed || talk.active) talk.release(); });
  }
  ui.ptt.addEventListener("contextmenu", (ev) => ev.preventDefault()); // long-press on touch
  ui.ptt.addEventListener("keydown", (ev) => { if (ev.key === "Enter") ev.preventDefault(); });

  // Space is the talk key everywhere except where it types (a focused checkbox or button
  // would otherwise toggle or click instead).
  const TEXT_INPUTS = /^(text|search|email|password|number|url|tel)$/;
  const typing = (t) => t instanceof HTMLElement && (t.isContentEditable || t.tagName === "TEXTAREA"
    || t.tagName === "SELECT" || (t.tagName === "INPUT" && TEXT_INPUTS.test(t.type)));
  document.addEventListener("keydown", (ev) => {
    if (ev.code !== "Space" || ev.repeat || typing(ev.target) || ui.pwDialog.open) return;
    ev.preventDefault();
    talk.press();
  });
  document.addEventListener("keyup", (ev) => {
    if (ev.code !== "Space" || typing(ev.target)) return;
    ev.preventDefault();
    talk.release();
  });
  window.addEventListener("blur", () => { if (talk.pressed || talk.active) talk.release(); });

  // --- busy tone: the telephone "engaged" signal, three short beeps (480 + 620 Hz)
  let toneCtx = null;
  function busyTone() {
    toneCtx = toneCtx || new AudioContext();
    toneCtx.resume().catch(() => {});
    const t0 = toneCtx.currentTime + 0.02;
    const gain = toneCtx.createGain();
    gain.gain.value = 0;
    gain.connect(toneCtx.destination);
    for (let i = 0; i < 3; i++) {
      const on = t0 + i * 0.25;
      gain.gain.setValueAtTime(0.15, on);
      gain.gain.setValueAtTime(0, on + 0.15);
    }
    for (const f of [480, 620]) {
      const osc = toneCtx.createOscillator();
      osc.frequency.value = f;
      osc.connect(gain);
      osc.start(t0);
      osc.stop(t0 + 0.8);
    }
  }

  // --- location: coarse, only while the switch is on, never stored in the browser
  const geo = {
    sharing: false, timer: null,
    async on() {
      if (!navigator.geolocation) { toast("This browser cannot tell its location."); ui.location.checked = false; return; }
      this.sharing = true;
      await this.send();
      // The server forgets a location not refreshed within VOICE_LOCATION_TTL_SECONDS.
      this.timer = setInterval(() => this.send(), (Number(root.dataset.locationTtl) * 1000) / 2);
    },
    send() {
      return new Promise((resolve) => {
        navigator.geolocation.getCurrentPosition(
          (pos) => {
            if (this.sharing) socket.send({ type: "location.set", lat: pos.coords.latitude, lon: pos.coords.longitude });
            resolve();
          },
          (err) => {
            toast(`Location unavailable: ${err.message}`);
            this.off();
            ui.location.checked = false;
            resolve();
          },
          { enableHighAccuracy: false, maximumAge: 60_000, timeout: 15_000 },
        );
      });
    },
    off() {
      const was = this.sharing;
      this.sharing = false;
      clearInterval(this.timer);
      if (was) socket.send({ type: "location.clear" });
    },
  };
  ui.location.addEventListener("change", () => (ui.location.checked ? geo.on() : geo.off()));

  function renderRange() {
    if (!state.channel) return;
    const km = state.channel.range_km;
    const has = state.me?.has_location;
    const country = state.myCountry?.country_name ? ` Others see only your country: ${state.myCountry.country_name}.` : "";
    let text;
    if (!km) text = "Unlimited channel: everyone in it hears you, wherever they are.";
    else if (has) text = `Your range: ${km} km. You hear and reach members within ${km} km (and those who share no location).`;
    else text = `This channel has a ${km} km range. Without sharing your location you hear and reach the whole channel.`;
    ui.range.textContent = text + (has ? country : " Others do not see your country unless you share your location.");
    ui.range.dataset.range = has && km ? String(km) : "all";
  }

  // --- small helpers
  let toastTimer = null;
  function toast(text, kind = "error") {
    ui.toast.textContent = text;
    ui.toast.className = `cb-toast ${kind}`;
    ui.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { ui.toast.hidden = true; }, 4000);
  }

  // --- test and diagnostics hook (numbers only: no audio is exposed)
  window.cbline = {
    get stats() {
      const p = player.stats;
      return {
        ...counters, packetsPlayed: p.packets, decodedFrames: p.decodedFrames, decodeErrors: p.decodeErrors,
        playedSamples: p.playedSamples, nonSilentSamples: p.nonSilentSamples, mediaSamples: p.mediaSamples,
        level: p.level ?? 0, replayStored: store.list().length,
      };
    },
    playbackStats: () => player.getStats(),
    get state() {
      return { channelId: state.channel?.id ?? null, talker: state.talker, talking: talk.active,
        hasLocation: !!state.me?.has_location, members: [...state.members.keys()], open: socket.open };
    },
    press: () => talk.press(),
    release: () => talk.release(),
  };

  // --- go
  // The audio graph exists from the start (suspended until a gesture where browsers insist),
  // so packets that arrive before the first click are decoded rather than dropped.
  player.init().catch(() => {});
  loadChannels();
  // The connection log records what the browser says it is: say it before connecting.
  describeThisDevice().catch(() => {}).finally(() => socket.connect());
  setStatus();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children.flat()) if (c !== "" && c !== null && c !== undefined) node.append(c);
  return node;
}
