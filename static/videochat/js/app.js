// Page entry of /videochat/: wires the DOM (found by data-vc attributes) to the DOM-free
// modules: VideoChatSession (socket + state), PeerSession (WebRTC), client info, snapshots.
import { LiveSocket } from "../../shared/js/socket.js";
import { watchEntitlements } from "../../payments/js/entitlements.js";
import { collectClientInfo } from "./client-info.js";
import { countryOptions, languageOptions } from "./options.js";
import { flag } from "../../shared/js/icons.js";
import { PeerSession } from "./rtc.js";
import { VideoChatSession } from "./session.js";
import { captureFrame } from "./snapshot.js";

const MAX_REPORT_LINES = 50;
const FILTERS_FEATURE = "videochat.filters";
const CONNECT_TIMEOUT_MS = 20000;
const REPORT_ERRORS = {
  no_partner: "There is nobody to report yet.",
  429: "You have sent many reports recently. Please try again later.",
  401: "Log in again to send a report.",
};
const PROFILE_FIELDS = new Set(["gender", "language", "translate_to"]);
// Error codes after which the socket is closed by the server and must not be reopened.
const BLOCKING = {
  banned: "You are banned from video chat",
  age_restricted: "Video chat is for adults only",
  replaced: "Video chat is open in another window",
};

const root = document.querySelector("[data-videochat]");
if (root) init(root);

function init(root) {
  const el = (name) => root.querySelector(`[data-vc="${name}"]`);
  const action = (name) => root.querySelector(`[data-vc-action="${name}"]`);
  const ui = {
    remoteVideo: el("remote-video"), localVideo: el("local-video"), partner: el("partner"),
    partnerFlag: el("partner-flag"), partnerName: el("partner-name"), partnerExtra: el("partner-extra"),
    wait: el("wait"), notice: el("notice"), mediaError: el("media-error"), settings: el("settings"),
    premiumHint: el("premium-hint"), chatLog: el("chat-log"), chatForm: el("chat-form"),
    chatHint: el("chat-hint"), reportDialog: el("report-dialog"), reportForm: el("report-form"),
    reportLines: el("report-lines"), reportLineList: el("report-line-list"),
    meFlag: el("me-flag"),
  };
  const chatInput = ui.chatForm.elements.text;
  const chatSend = ui.chatForm.querySelector("button[type=submit]");

  fillSelects(ui.settings, root.dataset);
  setFiltersAllowed(root.dataset.filtersAllowed === "true");

  // Premium bought (or lost) in another tab: unlock (or lock) the filters here at once.
  let premiumKnown = false;
  watchEntitlements((features) => {
    const allowed = features.has(FILTERS_FEATURE);
    if (premiumKnown && allowed !== (root.dataset.filtersAllowed === "true")) {
      notice(allowed ? "Premium is on: choose who you'd like to meet." : "Premium has ended: searching everyone.");
    }
    premiumKnown = true;
    root.dataset.entitlementsLive = "true"; // the server will tell this page of changes
    setFiltersAllowed(allowed);
  });

  let localStream = null;
  let lastFrame = null; // a still of the last partner, for a report after they left
  let partnerName = "Stranger"; // as the partner card shows them; the chat uses the same
  let noticeTimer = null;

  const socket = new LiveSocket("/ws/videochat/");
  const session = new VideoChatSession({
    socket,
    clientInfo: () => collectClientInfo(),
    createPeer: ({ role, iceServers, sendSignal }) =>
      new PeerSession({ role, iceServers, sendSignal, localStream }),
  });

  // --- camera and microphone preview
  navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: true })
    .then((stream) => {
      localStream = stream;
      ui.localVideo.srcObject = stream;
      root.dataset.media = "ready";
      action("start").disabled = false;
    })
    .catch((err) => {
      root.dataset.media = "denied";
      if (err?.name === "NotFoundError") ui.mediaError.textContent = "No camera or microphone was found on this device.";
    });

  // --- session → page
  session.addEventListener("state", ({ detail: { state } }) => render(state));
  session.addEventListener("ready", ({ detail: { me, filtersAllowed } }) => {
    setFiltersAllowed(filtersAllowed);
    if (ui.meFlag && me?.country) ui.meFlag.replaceChildren(flag(me.country, me.country_name));
  });
  session.addEventListener("entitlements", ({ detail: { filtersAllowed } }) => {
    setFiltersAllowed(filtersAllowed);
    notice(filtersAllowed ? "Premium is on: choose who you'd like to meet." : "Premium has ended: searching everyone.");
  });
  session.addEventListener("waiting", ({ detail: { expectedWaitS } }) => {
    ui.wait.textContent = describeWait(expectedWaitS);
    root.dataset.queued = "true"; // the server has us in line (not just "Start was pressed")
  });
  session.addEventListener("matched", ({ detail: { partner } }) => {
    lastFrame = null;
    ui.chatLog.replaceChildren();
    showPartner(partner);
    root.dataset.connection = "connecting";
  });
  session.addEventListener("peer", ({ detail: { peer } }) => {
    peer.addEventListener("remotestream", ({ detail: stream }) => {
      ui.remoteVideo.srcObject = stream;
      ui.remoteVideo.play().catch(() => {});
    });
    // A call that cannot connect (strict NATs without TURN, a partner gone silent) is skipped
    // rather than leaving the user staring at "Connecting…".
    const giveUp = () => {
      if (session.peer !== peer || session.state !== "matched") return;
      notice("Couldn't connect to that person. Finding someone else…");
      session.next();
    };
    const timer = setTimeout(giveUp, CONNECT_TIMEOUT_MS);
    peer.addEventListener("state", ({ detail: state }) => {
      if (state === "connected") { root.dataset.connection = "connected"; clearTimeout(timer); }
      else if (state === "failed") giveUp();
      else if (state === "closed") clearTimeout(timer);
    });
    peer.addEventListener("error", ({ detail: err }) => console.warn("videochat: peer error", err));
  });
  session.addEventListener("unmatched", ({ detail: { reason } }) => {
    keepLastFrame();
    ui.remoteVideo.srcObject = null;
    showPartner(null);
    delete root.dataset.connection;
    if (reason !== "next") notice(reason === "disconnected" ? "Your partner's connection dropped." : "Your partner moved on.");
  });
  session.addEventListener("chat", ({ detail: { line } }) => appendChat(line));
  session.addEventListener("error", ({ detail: { code, detail } }) => {
    if (Object.hasOwn(BLOCKING, code)) block(BLOCKING[code], detail);
    else if (code === "filters_not_allowed") {
      // Either our hello was refused (no "ready" comes: say it again without filters) or the
      // server dropped filters at queue entry because the subscription lapsed.
      setFiltersAllowed(false);
      if (session.wantQueue) session.updateSettings(readSettings());
      notice("Filters need Premium: searching everyone.");
    }
    // A line or candidate that crossed a Next on the wire: nothing for the user to act on.
    else if (code === "not_in_match") console.info("videochat:", detail);
    else notice(detail || "Something went wrong.");
  });
  socket.addEventListener("close", ({ detail: { code } }) => {
    if (code === 4401 || code === 4001) block("You are logged out", "Log in again to keep chatting.");
    else if (code === 4403 && root.dataset.blocked !== "true") block("Video chat is not available", "");
  });

  // --- page → session
  // The socket opens at the first Start, not on page load: the server gives the video chat
  // place to the newest socket, so merely opening this page elsewhere must not end a chat.
  let connected = false;
  action("start").addEventListener("click", () => {
    if (!localStream) return;
    if (!connected) { socket.connect(); connected = true; }
    session.start(readSettings());
  });
  action("next").addEventListener("click", () => session.next());
  action("stop").addEventListener("click", () => session.stop());
  ui.settings.addEventListener("change", (ev) => {
    session.updateSettings(readSettings());
    if (PROFILE_FIELDS.has(ev.target.name)) saveProfileSettings();
  });
  ui.settings.addEventListener("submit", (ev) => ev.preventDefault());

  ui.chatForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (session.sendChat(chatInput.value)) chatInput.value = "";
  });

  action("toggle-mic").addEventListener("click", (ev) => toggleTracks(ev.currentTarget, "audio"));
  action("toggle-cam").addEventListener("click", (ev) => toggleTracks(ev.currentTarget, "video"));

  let reportMatchId = null; // the match the open report dialog is about
  let reportLines = []; // the chat as it was when the dialog opened
  action("report").addEventListener("click", () => {
    if (session.state === "matched") keepLastFrame();
    reportMatchId = session.lastMatchId;
    reportLines = session.reportableChat().slice(-MAX_REPORT_LINES);
    ui.reportLineList.replaceChildren(...reportLines.map((line, i) => {
      const box = Object.assign(document.createElement("input"), { type: "checkbox", name: "line", value: String(i), checked: true });
      const label = document.createElement("label");
      label.append(box, `${line.from === "me" ? "You" : "Them"}: ${line.text}`);
      const li = document.createElement("li");
      li.dataset.testid = "report-line";
      li.append(label);
      return li;
    }));
    ui.reportLines.hidden = !reportLines.length;
    ui.reportForm.elements.attach_still.checked = true;
    ui.reportDialog.showModal();
  });
  action("report-cancel").addEventListener("click", () => ui.reportDialog.close());
  ui.reportForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    ui.reportDialog.close();
    // The server reports the current partner, else the last one: if someone new came along
    // while the dialog was open, this report would land on the wrong person.
    if (session.lastMatchId !== reportMatchId) { notice("That chat is over, so the report was not sent."); return; }
    const chosen = [...ui.reportLineList.querySelectorAll("input[name=line]:checked")].map((box) => reportLines[Number(box.value)]);
    sendReport(ui.reportForm.elements.reason.value, chosen, ui.reportForm.elements.attach_still.checked);
  });

  // The test hook (and a handy console probe): state and what the call is receiving.
  window.videochat = {
    get state() { return session.state; },
    async stats() {
      return {
        remoteVideoWidth: ui.remoteVideo.videoWidth,
        inboundBytes: session.peer ? await session.peer.inboundVideoBytes() : 0,
        matchId: session.matchId,
      };
    },
  };

  // --- helpers
  function render(state) {
    root.dataset.state = state;
    delete root.dataset.queued;
    const matched = state === "matched";
    chatInput.disabled = chatSend.disabled = !matched;
    const target = ui.settings.elements.translate_to.disabled ? "" : ui.settings.elements.translate_to.value;
    ui.chatHint.textContent = !matched ? "Messages appear here once you're connected."
      : target ? `Say hello. Your partner's messages are translated into ${languageName(target)}.`
        : "Say hello.";
    action("report").disabled = !(matched || lastFrame || session.chatLines.length);
    if (state === "waiting") ui.wait.textContent = describeWait(null);
  }

  function readSettings() {
    const f = ui.settings.elements;
    return {
      gender: f.gender.value,
      wantGender: f.want_gender.disabled ? "" : f.want_gender.value,
      wantCountry: f.want_country.disabled ? "" : f.want_country.value,
      language: f.language.value,
      translateTo: f.translate_to.disabled ? "" : f.translate_to.value,
    };
  }

  function setFiltersAllowed(allowed) {
    root.dataset.filtersAllowed = String(allowed);
    for (const select of ui.settings.querySelectorAll("[data-vc-filter]")) {
      select.disabled = !allowed;
      if (!allowed) select.value = "";
    }
    ui.premiumHint.hidden = allowed;
  }

  function showPartner(partner) {
    ui.partner.hidden = !partner;
    if (!partner) return;
    ui.partnerFlag.replaceChildren(...(partner.country ? [flag(partner.country, partner.country_name)] : []));
    ui.partnerFlag.hidden = !partner.country;
    // One name for the partner everywhere (card and chat): the nickname they chose to show,
    // else "Stranger". Nothing else about their account is sent (docs/protocols/videochat.md).
    partnerName = partner.name || "Stranger";
    ui.partnerName.textContent = partnerName;
    ui.partnerFlag.title = partner.country_name || "";
    const gender = { f: "woman", m: "man" }[partner.gender] ?? "";
    const language = partner.language ? languageName(partner.language) : "";
    ui.partnerExtra.textContent = [partner.country_name, gender, language && `speaks ${language}`]
      .filter(Boolean).join(" · ");
  }

  function appendChat(line) {
    const li = document.createElement("li");
    li.className = `vc-line from-${line.from === "me" ? "me" : "partner"}`;
    li.dataset.testid = "chat-line";
    const who = document.createElement("span");
    who.className = "vc-who";
    who.textContent = line.from === "me" ? "You" : partnerName;
    const original = document.createElement("p");
    original.className = "vc-original";
    original.textContent = line.text;
    if (line.lang) original.lang = line.lang;
    li.append(who);
    if (line.translation && line.translation !== line.text) {
      // The translation first; the original on demand.
      const translated = document.createElement("p");
      translated.className = "vc-translation";
      translated.dataset.testid = "chat-translation";
      translated.textContent = line.translation;
      original.hidden = true;
      const toggle = document.createElement("button");
      toggle.type = "button";
      toggle.className = "link vc-show-original";
      toggle.dataset.testid = "show-original";
      toggle.textContent = "Show original";
      toggle.addEventListener("click", () => {
        original.hidden = !original.hidden;
        toggle.textContent = original.hidden ? "Show original" : "Hide original";
      });
      li.append(translated, toggle, original);
    } else {
      li.append(original);
    }
    ui.chatLog.append(li);
    ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
    action("report").disabled = false;
  }

  function keepLastFrame() {
    // drawImage runs synchronously inside captureFrame, before the video is cleared.
    const pending = captureFrame(ui.remoteVideo).catch(() => null);
    lastFrame = pending;
  }

  async function sendReport(reason, lines, withStill) {
    const frame = withStill && lastFrame ? await lastFrame : null;
    const body = new FormData();
    body.append("reason", reason);
    body.append("chat_lines", JSON.stringify(lines));
    if (frame) body.append("frame", frame, "frame.jpg");
    try {
      const resp = await fetch(root.dataset.reportUrl, {
        method: "POST", body, credentials: "same-origin", headers: { "X-CSRFToken": csrfToken() },
      });
      if (!resp.ok) {
        const answer = await resp.json().catch(() => ({}));
        notice(REPORT_ERRORS[answer.error] ?? REPORT_ERRORS[resp.status] ?? "The report could not be sent. Please try again.");
        return;
      }
      notice("Thanks, your report was sent to our moderators.");
      lastFrame = null;
      if (session.state === "matched") session.next();
    } catch (err) {
      console.warn("videochat:", err);
      notice("The report could not be sent. Please try again.");
    }
  }

  // Gender, language and translation target are remembered on the profile for next time.
  // Changes are debounced and saved one request at a time, each with the values current when
  // it is sent, so a burst of changes cannot land out of order.
  let saveTimer = null;
  let saving = Promise.resolve();
  function saveProfileSettings() {
    clearTimeout(saveTimer);
    saveTimer = setTimeout(() => { saving = saving.then(postProfileSettings, postProfileSettings); }, 300);
  }

  function postProfileSettings() {
    const f = ui.settings.elements;
    const body = new URLSearchParams({
      gender: f.gender.value, language: f.language.value, translation_target: f.translate_to.value,
    });
    return fetch(root.dataset.settingsUrl, {
      method: "POST", body, credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
    }).catch(() => {});
  }

  function toggleTracks(button, kind) {
    const tracks = kind === "audio" ? localStream?.getAudioTracks() : localStream?.getVideoTracks();
    if (!tracks?.length) return;
    const off = tracks[0].enabled;
    for (const t of tracks) t.enabled = !off;
    button.setAttribute("aria-pressed", String(off));
    button.title = kind === "audio" ? (off ? "Unmute microphone" : "Mute microphone")
      : (off ? "Turn camera on" : "Turn camera off");
    root.dataset[kind === "audio" ? "micOff" : "camOff"] = String(off);
  }

  // The server refused us for good (ban, age, another tab): no reconnect, no Start.
  function block(title, detail) {
    socket.close();
    session.stop();
    root.dataset.blocked = "true";
    el("blocked-title").textContent = title;
    el("blocked-detail").textContent = detail && detail.toLowerCase() !== title.toLowerCase() ? detail : "";
    ui.remoteVideo.srcObject = null;
    for (const track of localStream?.getTracks() ?? []) track.stop(); // the camera light goes off
  }

  function notice(text) {
    ui.notice.textContent = text;
    ui.notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { ui.notice.hidden = true; }, 5000);
  }
}

function csrfToken() {
  return document.querySelector("meta[name=csrf-token]")?.content ?? "";
}

function fillSelects(form, data) {
  const locale = document.documentElement.lang || navigator.language || "en";
  const countries = countryOptions(locale);
  const languages = languageOptions(locale);
  for (const select of form.querySelectorAll("[data-vc-options]")) {
    const list = select.dataset.vcOptions === "countries" ? countries : languages;
    for (const { code, name } of list) {
      const label = name; // an <option> shows text only: no emoji flags (many systems lack the font)
      select.append(new Option(label, code));
    }
  }
  const f = form.elements;
  const browserLang = (navigator.language || "en").slice(0, 2).toLowerCase();
  setIfPresent(f.gender, data.gender);
  setIfPresent(f.language, data.language || browserLang) || setIfPresent(f.language, "en");
  setIfPresent(f.translate_to, data.translateTo);
}

function setIfPresent(select, value) {
  if (value && [...select.options].some((o) => o.value === value)) { select.value = value; return true; }
  return false;
}

function languageName(code) {
  try { return new Intl.DisplayNames([navigator.language || "en"], { type: "language" }).of(code); } catch { return code; }
}

function describeWait(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "Looking for someone for you";
  if (seconds < 2) return "Any second now";
  if (seconds < 60) return `Usually about ${Math.round(seconds)} seconds`;
  return `Usually about ${Math.round(seconds / 60)} min`;
}
