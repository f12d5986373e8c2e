// CallsApp page: conversation list, chat view, composer, group management, devices and
// verification, calls. The cryptography and the sync stream are in client.js, the calls'
// WebRTC in calls.js; this file only draws.
import { CallManager } from "./calls.js";
import { CallsClient, undecryptableReason } from "./client.js";
import { Bots } from "./bots.js";
import { Communities } from "./communities.js";
import { LEVELS, MUTE_CHOICES, Notifier, isMuted, muteLabel, muteUntil, shouldNotify, unreadTitle } from "./notify.js";

const root = document.querySelector("[data-callsapp]");
const $ = (sel, el = root) => el.querySelector(sel);
const $$ = (sel, el = root) => [...el.querySelectorAll(sel)];

let client = null;
let calls = null;
let communities = null; // communities and public accounts (plain, not E2E)
let bots = null; // bots and bot chats (plain, not E2E)
let current = null; // open room id
let verification = null; // { request, sas }
const baseTitle = document.title;
let notifiedCall = null; // the incoming call a notification was shown for (once per call)
const notifier = new Notifier({
  onOpen: (roomId) => {
    window.focus();
    openRoom(roomId);
  },
});

function setState(state, text) {
  root.dataset.state = state;
  const status = $("[data-status]");
  status.textContent = text || "";
  status.hidden = !text;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "text") node.textContent = v;
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function icon(name) {
  return el("span", { class: `icon icon-${name}`, "aria-hidden": "true" });
}

function time(ts) {
  const d = new Date(ts);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : d.toLocaleDateString();
}

function duration(ms) {
  const total = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** One call's line in the chat: who called, whether it was answered, and for how long. */
function callLogText(record) {
  const c = record.content || {};
  const kind = c.video ? "video call" : "voice call";
  const answered = c.answered_ts != null;
  const length = answered && c.ended_ts != null ? ` · ${duration(c.ended_ts - c.answered_ts)}` : "";
  if (record.mine) {
    if (answered) return { text: `Outgoing ${kind}${length}`, icon: "phone-outgoing" };
    const why = { user_busy: "busy on another call", declined: "declined", invite_timeout: "no answer" }[c.reason];
    return { text: `Outgoing ${kind}${why ? ` · ${why}` : c.ended_ts != null ? " · cancelled" : ""}`, icon: "phone-outgoing" };
  }
  if (answered) return { text: `Incoming ${kind}${length}`, icon: "phone-incoming" };
  if (c.reason === "declined") return { text: `Declined ${kind}`, icon: "phone-missed", missed: true };
  if (c.ended_ts == null && calls?.call?.id === record.event_id.slice("call:".length)) {
    return { text: `Incoming ${kind}`, icon: "phone-incoming" };
  }
  return { text: `Missed ${kind}`, icon: "phone-missed", missed: true };
}

function showError(form, err) {
  const box = $("[data-error]", form);
  if (!box) return;
  box.textContent = err ? err.message || String(err) : "";
  box.hidden = !err;
}

async function roomTitle(room) {
  if (room.name) return room.name;
  const others = room.members.filter((u) => u !== client.userId);
  if (!others.length) return "Just you";
  return others.map((u) => client.displayName(u)).join(", ");
}

// --- conversation list

/** A 1:1 chat shows the other's profile photo; a group, or someone without one, a letter. */
async function avatar(room) {
  const other = room.is_direct ? room.members.find((u) => u !== client.userId) : null;
  const photo = other ? client.avatar(other) : null;
  if (photo) return el("img", { class: "ca-avatar", src: photo, alt: "", "data-testid": "avatar", loading: "lazy" });
  return el("span", { class: "ca-avatar", "aria-hidden": "true", text: (await roomTitle(room)).slice(0, 1).toUpperCase() });
}

async function drawRooms() {
  const rooms = (await client.history.rooms()).sort((a, b) => (b.last_ts || 0) - (a.last_ts || 0));
  const list = $("[data-room-list]");
  list.replaceChildren();
  for (const room of rooms) {
    const unread = room.unread || 0;
    const item = el(
      "li",
      { dataset: { roomId: room.room_id }, class: room.room_id === current ? "active" : "" },
      el(
        "button",
        { type: "button", class: "ca-room", "data-testid": "room" },
        await avatar(room),
        el(
          "span",
          { class: "ca-room-main" },
          el("strong", { class: "ca-room-name", text: await roomTitle(room) }),
          el("small", { class: "ca-room-sub", text: room.left ? "Left" : room.is_direct ? "Direct" : `${room.members.length} members` }),
        ),
        isMuted(room) ? el("span", { class: "icon icon-bell-off ca-muted", role: "img", "aria-label": "Muted", "data-testid": "muted" }) : null,
        unread ? el("span", { class: "ca-unread", "data-testid": "unread", "aria-label": `${unread} unread`, text: String(unread) }) : null,
      ),
    );
    list.append(item);
  }
  $("[data-rooms-empty]").hidden = rooms.length > 0;
  document.title = unreadTitle(baseTitle, rooms.reduce((n, r) => n + (r.unread || 0), 0));
}

// --- desktop notifications (notify.js): what they say is this device's choice

function pageInFront() {
  return { hidden: document.hidden, focused: document.hasFocus() };
}

async function notifyMessage({ roomId, sender, text, attachment }) {
  if (!shouldNotify({ mine: sender === client.userId, ...pageInFront() })) return;
  const room = await client.history.room(roomId);
  if (isMuted(room)) return;
  const direct = !room || room.is_direct;
  notifier.message({ roomId, sender: client.displayName(sender), room: room && !direct ? await roomTitle(room) : null, direct, text, attachment });
}

function drawNotificationSetting() {
  const form = $("[data-form=notifications]");
  const select = $("select[name=level]", form);
  if (!select.options.length) {
    for (const [value, label] of Object.entries(LEVELS)) select.append(el("option", { value, text: label }));
  }
  select.value = notifier.level;
  const hint = $("[data-notifications-hint]", form);
  const permission = notifier.permission;
  const why = {
    unsupported: "This browser cannot show notifications.",
    denied: "Notifications are blocked for this site in your browser's settings: allow them there.",
    default: notifier.level === "off" ? "" : "Your browser will ask whether this site may show notifications.",
  }[permission];
  hint.textContent = why || "";
  hint.hidden = !why;
  form.dataset.permission = permission;
}

// --- chat view

function ticks(record) {
  const labels = { sending: "Sending", sent: "Sent", delivered: "Delivered", seen: "Seen", failed: "Not sent" };
  const icons = { sending: "clock", sent: "check", delivered: "check-check", seen: "check-check", failed: "circle-alert" };
  const status = record.status || "sent";
  return el(
    "span",
    { class: `ca-tick ca-tick-${status}`, "data-testid": "tick", "data-status": status, title: labels[status] },
    icon(icons[status]),
    el("span", { class: "sr", text: labels[status] }),
  );
}

async function drawAttachment(record) {
  const c = record.content;
  const box = el("div", { class: "ca-file" });
  if (record.fileError) {
    box.append(el("span", { class: "ca-refused", text: record.fileError }));
    return box;
  }
  try {
    const bytes = await client.attachment(c);
    const url = URL.createObjectURL(new Blob([bytes], { type: c.info?.mimetype || "application/octet-stream" }));
    if (c.msgtype === "m.image") box.append(el("img", { src: url, alt: c.body, class: "ca-image", "data-testid": "image" }));
    box.append(
      el("a", { href: url, download: c.body, "data-testid": "file-link" }, icon("paperclip"), ` ${c.body}`),
    );
  } catch (err) {
    box.append(el("span", { class: "ca-refused", text: err.message }));
  }
  return box;
}

async function drawMessage(record) {
  const sdk = client.sdk;
  const mine = record.mine;
  const li = el("li", {
    class: `ca-msg ${mine ? "mine" : "theirs"} ca-${record.kind}`,
    dataset: { eventId: record.event_id, kind: record.kind },
    "data-testid": "message",
  });
  if (record.kind === "call") {
    const log = callLogText(record);
    li.className = `ca-calllog${log.missed ? " missed" : ""}`;
    li.setAttribute("data-testid", "call-log");
    li.append(icon(log.icon), el("span", { text: `${log.text} · ${time(record.ts)}` }));
    return li;
  }
  if (record.kind === "notice") {
    li.className = "ca-notice";
    li.setAttribute("data-testid", "notice");
    li.textContent = record.content?.body || "";
    return li;
  }
  const bubble = el("div", { class: "ca-bubble" });
  if (!mine) bubble.append(el("div", { class: "ca-sender", text: client.displayName(record.sender) }));
  if (record.redacted) {
    bubble.append(el("em", { class: "ca-deleted", "data-testid": "deleted", text: "Message deleted" }));
  } else if (record.kind === "utd" || record.kind === "refused") {
    bubble.classList.add("ca-undecryptable");
    bubble.append(
      el("div", { class: "ca-refused", "data-testid": "undecryptable" }, icon("lock-open"), " ", undecryptableReason(record.error, sdk)),
    );
  } else if (record.content?.file) {
    bubble.append(await drawAttachment(record));
  } else {
    bubble.append(el("div", { class: "ca-body", "data-testid": "body", text: record.content?.body || "" }));
  }
  const meta = el("div", { class: "ca-meta" }, el("time", { text: time(record.ts) }));
  if (record.kind === "message" && record.shield && record.shield.color === sdk.ShieldColor.Red) {
    meta.prepend(el("span", { class: "ca-shield", title: record.shield.message || "Unverified", "data-testid": "shield" }, icon("shield-alert")));
  }
  if (mine) meta.append(ticks(record));
  if (record.status === "failed") meta.append(el("span", { class: "ca-refused", text: " Not sent" }));
  bubble.append(meta);
  if (mine && record.kind === "message" && !record.redacted && !record.event_id.startsWith("~")) {
    bubble.append(
      el("button", { type: "button", class: "link ca-delete", "data-action": "redact", "data-testid": "redact" }, "Delete for everyone"),
    );
  }
  li.append(bubble);
  return li;
}

let timelineDraws = 0; // the latest drawTimeline call: only it may draw

async function drawTimeline() {
  if (!current) return;
  const draw = ++timelineDraws;
  const roomId = current;
  const events = (await client.history.timeline(roomId)).filter((r) => r.kind !== "hidden");
  const items = [];
  for (const record of events) items.push(await drawMessage(record));
  // Draws overlap (every event and tick starts one) and finish in any order: one that
  // read the history before a later change (a redaction) must not draw over it.
  if (draw !== timelineDraws || roomId !== current) return;
  const list = $("[data-timeline]");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  patchChildren(list, items, (node) => node.dataset.eventId);
  if (atBottom || items.length < 30) list.scrollTop = list.scrollHeight;
  if (!document.hidden && client.caughtUp) client.markRead(current).catch(() => {});
}

/**
 * Make `parent`'s children look like `fresh` while keeping every node that stays: a child
 * with the same key is updated in place (a tick's change must not replace the message's
 * "Delete for everyone" button: a button replaced between press and release gets no click).
 */
function patchChildren(parent, fresh, keyOf) {
  const kept = new Map();
  for (const child of parent.children) if (keyOf(child)) kept.set(keyOf(child), child);
  const wanted = fresh.map((node) => {
    const old = keyOf(node) && kept.get(keyOf(node));
    if (!old || old.nodeName !== node.nodeName) return node;
    kept.delete(keyOf(node));
    patchNode(old, node);
    return old;
  });
  wanted.forEach((node, k) => {
    if (parent.children[k] !== node) parent.insertBefore(node, parent.children[k] || null);
  });
  while (parent.children.length > wanted.length) parent.lastElementChild.remove();
}

function patchNode(old, fresh) {
  if (old.nodeType !== fresh.nodeType || old.nodeName !== fresh.nodeName) {
    old.replaceWith(fresh);
    return;
  }
  if (old.nodeType !== Node.ELEMENT_NODE) {
    if (old.nodeValue !== fresh.nodeValue) old.nodeValue = fresh.nodeValue;
    return;
  }
  for (const { name } of [...old.attributes]) if (!fresh.hasAttribute(name)) old.removeAttribute(name);
  for (const { name, value } of fresh.attributes) if (old.getAttribute(name) !== value) old.setAttribute(name, value);
  const olds = [...old.childNodes];
  const news = [...fresh.childNodes];
  news.forEach((node, k) => (k < olds.length ? patchNode(olds[k], node) : old.append(node)));
  for (const node of olds.slice(news.length)) node.remove();
}

// The open chat's contact: asked when the chat opens, then again at most every
// PRESENCE_REFRESH_MS (the head is drawn at every event and tick).
const PRESENCE_REFRESH_MS = 30000;
let presence = { user: null, online: false, at: 0 };

function askPresence(userId) {
  presence = { user: userId, online: presence.user === userId && presence.online, at: Date.now() };
  client
    .presence(userId)
    .then((p) => {
      if (presence.user !== userId) return;
      presence.online = p === "online";
      if (current) drawChatHead();
    })
    .catch(() => {});
}

async function drawChatHead() {
  const room = await client.history.room(current);
  if (!room) return;
  $("[data-room-name]").textContent = await roomTitle(room);
  const sub = $("[data-room-sub]");
  sub.textContent = room.is_direct ? "" : `· ${room.members.length} members`;
  if (room.is_direct) {
    const other = room.members.find((u) => u !== client.userId);
    if (other) {
      if (presence.user !== other || Date.now() - presence.at > PRESENCE_REFRESH_MS) askPresence(other);
      if (presence.user === other && presence.online) sub.textContent = "· online";
    }
  }
  $("[data-left]").hidden = !room.left;
  $("[data-form=composer]").hidden = Boolean(room.left);
  for (const button of $$("[data-direct-only]")) button.hidden = !room.is_direct || Boolean(room.left);
  await drawKeyChange(room);
}

async function drawKeyChange(room) {
  const changed = [];
  for (const u of room.members) if (u !== client.userId && (await client.keyChanged(u))) changed.push(u);
  const box = $("[data-keychange]");
  box.hidden = !changed.length;
  box.dataset.users = changed.join(" ");
  $("[data-keychange-text]").textContent = changed.length
    ? `The safety keys of ${changed.map((u) => client.displayName(u)).join(", ")} changed. They may have reinstalled or signed in anew, or someone may be in the middle: verify them in Devices and safety.`
    : "";
}

async function openRoom(roomId) {
  current = roomId;
  client.openRoom = roomId;
  root.classList.add("room-open");
  $("[data-placeholder]").hidden = true;
  $("[data-chat]").hidden = false;
  closePanels();
  await drawChatHead();
  await drawTimeline();
  await drawRooms();
  $("[data-form=composer] textarea").focus();
}

function closePanels() {
  for (const p of $$("[data-panel]")) p.hidden = true;
  if (current) $("[data-chat]").hidden = false;
}

function openPanel(name) {
  for (const p of $$("[data-panel]")) p.hidden = p.dataset.panel !== name;
  $("[data-chat]").hidden = true;
  $("[data-placeholder]").hidden = true;
  root.classList.add("room-open");
}

// --- panels

async function drawUndelivered() {
  const list = $("[data-undelivered-list]");
  list.replaceChildren(el("li", { class: "ca-hint", text: "Loading…" }));
  const { events } = await client.undelivered(current);
  const rows = [];
  for (const item of events) {
    const record = await client.history.event(item.event_id);
    const content = record ? await client.history.unseal(record.sealed) : null;
    rows.push(
      el(
        "li",
        { "data-testid": "undelivered", dataset: { eventId: item.event_id } },
        el("span", { class: "ca-body", text: content?.body || "(message)" }),
        el("small", {
          class: "ca-hint",
          text: ` waiting for ${item.pending_devices} device${item.pending_devices === 1 ? "" : "s"}; deleted undelivered on ${new Date(item.expires_at).toLocaleString()}`,
        }),
      ),
    );
  }
  list.replaceChildren(...(rows.length ? rows : [el("li", { class: "ca-hint", text: "Everything you sent here has been delivered." })]));
}

async function drawManage({ fresh = false } = {}) {
  const room = await client.history.room(current);
  const admin = room.admins?.includes(client.userId);
  for (const node of $$("[data-group-only]")) node.hidden = room.is_direct || (node.dataset.form && !admin);
  const rename = $("[data-form=rename] input");
  // A redraw (after a kick, an admin change) keeps a name the user is typing.
  rename.oninput = () => { rename.dataset.edited = "1"; };
  if (fresh || !rename.dataset.edited) {
    rename.value = room.name || "";
    delete rename.dataset.edited;
  }
  drawMute(room);
  const blocked = new Set(await client.blocked().catch(() => []));
  const list = $("[data-members]");
  list.replaceChildren();
  for (const userId of room.members) {
    const isMe = userId === client.userId;
    const row = el(
      "li",
      { dataset: { userId }, "data-testid": "member" },
      el("span", { class: "ca-member-name", text: isMe ? "You" : client.displayName(userId) }),
      room.admins?.includes(userId) ? el("span", { class: "badge", text: "admin" }) : null,
    );
    if (!isMe) {
      row.append(el("button", { type: "button", class: "button small secondary", "data-action": "verify-user", "data-testid": "verify-user" }, "Verify"));
      row.append(
        el("button", { type: "button", class: "button small secondary", "data-action": blocked.has(userId) ? "unblock" : "block", "data-testid": "block" }, blocked.has(userId) ? "Unblock" : "Block"),
      );
      if (admin && !room.is_direct) {
        row.append(el("button", { type: "button", class: "button small secondary", "data-action": room.admins?.includes(userId) ? "unadmin" : "admin" }, room.admins?.includes(userId) ? "Remove admin" : "Make admin"));
        row.append(el("button", { type: "button", class: "button small danger", "data-action": "kick", "data-testid": "kick" }, "Remove"));
      }
    }
    list.append(row);
  }
}

function drawMute(room) {
  const select = $("[data-form=mute] select");
  if (!select.options.length) {
    for (const [value, label] of Object.entries(MUTE_CHOICES)) select.append(el("option", { value, text: label }));
  }
  select.value = "0"; // a choice is a new mute from now; the line below says the current one
  const state = $("[data-mute-state]");
  state.textContent = muteLabel(room);
  state.hidden = !state.textContent;
}

// Whose devices the devices panel shows (it is redrawn when their trust changes).
let devicesOwner = null;

function devicesPanelOpen() {
  const panel = $('[data-panel="devices"]');
  return Boolean(panel && !panel.hidden);
}

// One draw at a time: two interleaved draws would each add the owner's trust line.
let devicesDrawing = Promise.resolve();

function drawDevices(userId = client.userId) {
  devicesOwner = userId;
  devicesDrawing = devicesDrawing.then(() => drawDevicesNow(userId)).catch((err) => console.warn("CallsApp: devices", err));
  return devicesDrawing;
}

async function drawDevicesNow(userId) {
  const list = $("[data-my-devices]");
  list.replaceChildren(el("li", { class: "ca-hint", text: "Loading…" }));
  const devices = await client.devicesOf(userId);
  const rows = devices.map((d) =>
    el(
      "li",
      { dataset: { deviceId: d.deviceId, userId }, "data-testid": "device" },
      el("span", { class: "ca-member-name" }, d.deviceId, d.deviceId === client.deviceId && userId === client.userId ? " (this browser)" : ""),
      el("span", { class: d.verified ? "badge ok" : "badge", "data-testid": "device-trust", text: d.verified ? "verified" : "not verified" }),
      el("code", { class: "ca-fingerprint", title: "Ed25519 key", text: d.ed25519.replace(/(.{4})/g, "$1 ").trim() }),
      d.deviceId !== client.deviceId && !d.verified
        ? el("button", { type: "button", class: "button small secondary", "data-action": "verify-device", "data-testid": "verify-device" }, "Verify")
        : null,
    ),
  );
  list.replaceChildren(...rows);
  if (client.needsVerification && userId === client.userId) {
    list.append(el("li", { class: "ca-hint", "data-testid": "verify-this-device" }, "Verify this browser with one of your other devices, so your contacts can tell it is yours."));
  }
  $("[data-devices-owner]")?.remove();
  if (userId !== client.userId) {
    // The safety check of a contact: verified once your emoji comparison with one of their
    // devices made your user-signing key sign their identity.
    const name = client.displayName(userId);
    const verified = await client.identityVerified(userId);
    list.before(
      el("p", {
        class: verified ? "ca-hint ok" : "ca-hint",
        "data-devices-owner": true,
        "data-testid": "identity-trust",
        "data-verified": String(verified),
        text: verified
          ? `Devices of ${name}. You verified ${name}: the devices they sign are trusted.`
          : `Devices of ${name}. Not verified yet: compare emoji with one of their devices.`,
      }),
    );
  }
  drawNotificationSetting();
  const settings = await client.settings().catch(() => null);
  if (settings) {
    const form = $("[data-form=settings]");
    form.read_receipts.checked = settings.read_receipts;
    form.online_status.checked = settings.online_status;
    // Held off for an EEA user under 16 (the server refuses a change): say why.
    form.read_receipts.disabled = form.online_status.disabled = settings.locked;
    form.querySelector("[data-privacy-locked]").hidden = !settings.locked;
    form.dataset.state = "loaded"; // what the server holds is shown (tests wait for it)
  }
  const blocked = await client.blocked().catch(() => []);
  $("[data-blocked]").replaceChildren(
    ...(blocked.length
      ? blocked.map((u) =>
          el("li", { dataset: { userId: u } }, el("span", { text: client.displayName(u) }), el("button", { type: "button", class: "button small secondary", "data-action": "unblock" }, "Unblock")),
        )
      : [el("li", { class: "ca-hint", text: "Nobody." })]),
  );
}

// --- verification (SAS emoji)

async function drawVerification() {
  const box = $("[data-verify]");
  if (!verification) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const { request } = verification;
  const who = request.otherUserId.toString() === client.userId ? "your other device" : client.displayName(request.otherUserId.toString());
  $("[data-verify-title]").textContent = `Verify ${who}`;
  const text = $("[data-verify-text]");
  const emojiList = $("[data-emoji]");
  const match = $("[data-action=sas-match]");
  const accept = $("[data-action=sas-accept]");
  match.hidden = true;
  accept.hidden = true;
  emojiList.replaceChildren();
  const sas = verification.sas || (request.getVerification?.() ?? null);
  if (request.isCancelled() || sas?.isCancelled?.()) {
    text.textContent = "Verification cancelled.";
  } else if (request.isDone() || sas?.isDone?.()) {
    text.textContent = "Verified. Messages from this device are now trusted.";
    $("[data-verify]").dataset.done = "true";
  } else if (sas && sas.canBePresented()) {
    text.textContent = "Compare these emoji with the other screen. Tap 'They match' only if they are the same, in the same order.";
    for (const e of sas.emoji() || []) emojiList.append(el("li", {}, el("span", { class: "ca-emoji-symbol", text: e.symbol }), el("small", { text: e.description })));
    match.hidden = sas.haveWeConfirmed();
    if (sas.haveWeConfirmed()) text.textContent = "Waiting for the other side to confirm…";
  } else if (!request.weStarted() && !request.isReady()) {
    text.textContent = `${who} wants to verify with this device.`;
    accept.hidden = false;
  } else {
    text.textContent = "Waiting for the other device…";
  }
}

function watchVerification(request) {
  verification = { request, sas: null };
  request.registerChangesCallback(async () => {
    const v = request.getVerification();
    if (v && !verification.sas && v.constructor?.name === "Sas") {
      verification.sas = v;
      v.registerChangesCallback(async () => drawVerification());
      if (!v.weStarted() && !v.hasBeenAccepted()) await client.sendVerificationRequest(v.accept());
    }
    if (request.isReady() && request.weStarted() && !verification.sas) {
      const started = await request.startSas();
      if (started) {
        const [sas, outgoing] = started;
        verification.sas = sas;
        sas.registerChangesCallback(async () => drawVerification());
        await client.sendVerificationRequest(outgoing);
      }
    }
    if (request.isDone() && verification && !verification.finished) {
      verification.finished = true;
      await client.afterVerification();
      const other = request.otherUserId.toString();
      await drawDevices(other); // their devices, now trusted
      // The SDK says "done" before it has stored the new trust (seen: the draw above still
      // read "not verified"): draw again once the store shows it.
      const deviceId = request.otherDeviceId?.toString();
      if (deviceId) {
        client.untilDeviceVerified(other, deviceId).then(() => {
          if (devicesPanelOpen()) drawDevices(devicesOwner);
        });
      }
    }
    await drawVerification();
  });
  drawVerification();
}

// --- actions

const CALL_ENDED = {
  user_busy: "Busy: on another call",
  declined: "Declined",
  invite_timeout: "No answer",
  missed: "Missed call",
  answered_elsewhere: "Answered on another device",
  ice_failed: "The connection failed",
};
let callTicker = null;
let shownCall = null;

/** The call overlay: ringing, connecting, the running length, or why it ended. */
function drawCall(call) {
  const box = $("[data-call]");
  clearInterval(callTicker);
  callTicker = null;
  if (!call) {
    box.hidden = true;
    box.classList.remove("mini"); // the next call opens full size
    $("[data-action=call-minimize]").setAttribute("aria-pressed", "false");
    $("[data-minimize-label]").textContent = "Chats";
    return;
  }
  shownCall = call;
  box.hidden = false;
  box.dataset.state = call.state;
  box.dataset.direction = call.direction;
  box.toggleAttribute("data-video", call.video);
  $("[data-call-peer]").textContent = client.displayName(call.peer);
  const photo = client.avatar(call.peer);
  const face = $("[data-call-avatar]");
  face.hidden = !photo || (call.video && call.state === "connected");
  if (photo && face.getAttribute("src") !== photo) face.src = photo;
  const status = $("[data-call-status]");
  const ringingIn = call.direction === "in" && call.state === "ringing";
  const live = call.state === "connecting" || call.state === "connected";
  if (call.state === "connected") {
    const tick = () => (status.textContent = duration(Date.now() - call.connectedAt));
    tick();
    callTicker = setInterval(tick, 1000);
  } else if (call.state === "ended") {
    status.textContent =
      call.reason === "media_failed"
        ? `No camera or microphone: ${call.detail}`
        : CALL_ENDED[call.reason] || "Call ended";
    // The reason stays in view for a moment, unless another call has begun.
    setTimeout(() => {
      if (shownCall === call) drawCall(null);
    }, 2500);
  } else {
    status.textContent = {
      starting: "Starting…",
      ringing: ringingIn ? `Incoming ${call.video ? "video" : "voice"} call` : "Ringing…",
      connecting: "Connecting…",
    }[call.state];
  }
  $("[data-action=call-accept]").hidden = !ringingIn;
  $("[data-action=call-mute]").hidden = !live;
  $("[data-action=call-mute]").setAttribute("aria-pressed", String(call.muted));
  $("[data-action=call-camera]").hidden = !live || !call.video;
  $("[data-action=call-camera]").setAttribute("aria-pressed", String(call.cameraOff));
  $("[data-action=call-hangup]").hidden = call.state === "ended";
  $("[data-action=call-minimize]").hidden = !live;
  $("[data-hangup-label]").textContent = ringingIn ? "Decline" : "Hang up";
  const remote = $("[data-remote-video]");
  if (remote.srcObject !== call.remoteStream) remote.srcObject = call.remoteStream;
  const local = $("[data-local-video]");
  if (local.srcObject !== call.localStream) local.srcObject = call.localStream;
}

async function act(action, target) {
  if (communities && (await communities.act(action, target))) return;
  if (bots && (await bots.act(action, target))) return;
  const userId = target.closest("[data-user-id]")?.dataset.userId;
  switch (action) {
    case "new-chat":
    case "new-group": {
      const form = $(`[data-form=${action}]`);
      form.hidden = !form.hidden;
      if (!form.hidden) $("input", form).focus();
      break;
    }
    case "devices":
      openPanel("devices");
      await drawDevices();
      break;
    case "back":
      root.classList.remove("room-open");
      current = null;
      client.openRoom = null;
      break;
    case "close-panel":
      closePanels();
      if (!current) root.classList.remove("room-open");
      break;
    case "undelivered":
      openPanel("undelivered");
      await drawUndelivered();
      break;
    case "manage":
      // Filled before it shows: a name typed at once must not get the old one in front of it.
      await drawManage({ fresh: true });
      openPanel("manage");
      break;
    case "redact":
      if (window.confirm("Delete this message for everyone?")) {
        await client.redact(current, target.closest("[data-event-id]").dataset.eventId);
      }
      break;
    case "kick":
      await client.removeMember(current, userId);
      await drawManage();
      break;
    case "admin":
    case "unadmin":
      await client.setAdmin(current, userId, action === "admin");
      await drawManage();
      break;
    case "block":
    case "unblock":
      await client.setBlocked(userId, action === "block");
      if (!$("[data-panel=manage]").hidden) await drawManage();
      else await drawDevices();
      break;
    case "leave":
      await client.leaveRoom(current);
      closePanels();
      await drawChatHead();
      break;
    case "verify-user":
      openPanel("devices");
      await drawDevices(userId);
      break;
    case "verify-device": {
      const row = target.closest("[data-device-id]");
      watchVerification(await client.requestVerification(row.dataset.userId, row.dataset.deviceId));
      break;
    }
    case "sas-accept":
      await client.sendVerificationRequest(verification.request.accept());
      await drawVerification();
      break;
    case "sas-match":
      for (const outgoing of await verification.sas.confirm()) await client.sendVerificationRequest(outgoing);
      await drawVerification();
      break;
    case "sas-cancel":
      if (verification) await client.sendVerificationRequest((verification.sas || verification.request).cancel());
      verification = null;
      await drawVerification();
      break;
    case "call-audio":
    case "call-video": {
      const room = await client.history.room(current);
      const peer = room?.members.find((u) => u !== client.userId);
      if (peer) await calls.place(current, peer, { video: action === "call-video" });
      break;
    }
    case "call-accept":
      await calls.accept();
      break;
    case "call-hangup":
      calls.hangup();
      break;
    case "call-mute":
      calls.toggleMute();
      break;
    case "call-camera":
      calls.toggleCamera();
      break;
    case "call-minimize": {
      const mini = $("[data-call]").classList.toggle("mini");
      target.setAttribute("aria-pressed", String(mini));
      $("[data-minimize-label]").textContent = mini ? "Back to call" : "Chats";
      break;
    }
    case "ack-keychange":
      for (const u of $("[data-keychange]").dataset.users.split(" ").filter(Boolean)) await client.acknowledgeKeyChange(u);
      await drawChatHead();
      break;
    default:
      break;
  }
}

root.addEventListener("click", (ev) => {
  const button = ev.target.closest("[data-action]");
  if (button) {
    act(button.dataset.action, button).catch((err) => setState("ready", err.message));
    return;
  }
  const room = ev.target.closest("[data-room-id] .ca-room");
  if (room) openRoom(room.closest("[data-room-id]").dataset.roomId);
});

async function submit(form) {
  const name = form.dataset.form;
  showError(form, null);
  try {
    if (communities && (await communities.submit(form))) return;
    if (bots && (await bots.submit(form))) return;
    if (name === "new-chat") {
      const roomId = await client.startDirect(form.term.value);
      if (!roomId) throw new Error("Nobody has exactly that nickname or email.");
      form.reset();
      form.hidden = true;
      await openRoom(roomId);
    } else if (name === "new-group") {
      const ids = [];
      for (const term of form.members.value.split(/[\n,]+/).map((t) => t.trim()).filter(Boolean)) {
        const found = await client.findUser(term);
        if (!found) throw new Error(`Nobody has exactly the nickname or email "${term}".`);
        client.names.set(found.user_id, found.display_name || found.user_id);
        ids.push(found.user_id);
      }
      await client.saveNames();
      const roomId = await client.createGroup(form.name.value.trim(), ids);
      form.reset();
      form.hidden = true;
      await openRoom(roomId);
    } else if (name === "composer") {
      const body = form.body.value;
      if (!body.trim()) return;
      form.body.value = "";
      await client.sendText(current, body);
    } else if (name === "rename") {
      await client.renameGroup(current, form.name.value.trim());
      delete form.name.dataset.edited;
      await drawChatHead();
    } else if (name === "add-member") {
      const found = await client.findUser(form.term.value);
      if (!found) throw new Error("Nobody has exactly that nickname or email.");
      client.names.set(found.user_id, found.display_name || found.user_id);
      await client.addMember(current, found.user_id);
      form.reset();
      await drawManage();
    }
  } catch (err) {
    showError(form, err);
    if (name === "composer") setState("ready", `Not sent: ${err.message}`);
    if (name === "community-post") setState("ready", `Not posted: ${err.message}`);
    if (name === "bot-message") setState("ready", `Not sent: ${err.message}`);
  }
}

root.addEventListener("submit", (ev) => {
  const form = ev.target.closest("[data-form]");
  if (!form) return;
  ev.preventDefault();
  submit(form);
});

root.addEventListener("keydown", (ev) => {
  const composing = ev.target.name === "body" || (ev.target.name === "text" && ["community-post", "bot-message"].includes(ev.target.form?.dataset.form));
  if (composing && ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    ev.target.form.requestSubmit();
  }
});

root.addEventListener("change", async (ev) => {
  if (ev.target.name === "file" && ev.target.files[0]) {
    const file = ev.target.files[0];
    ev.target.value = "";
    try {
      await client.sendFile(current, file);
    } catch (err) {
      setState("ready", `Not sent: ${err.message}`);
    }
  }
  if (ev.target.closest("[data-form=community-access]")) {
    communities.setAccess(ev.target.value).catch((err) => setState("ready", `Not saved: ${err.message}`));
    return;
  }
  if (ev.target.closest("[data-form=mute]") && current) {
    const until = muteUntil(ev.target.value);
    const room = await client.history.updateRoom(current, (r) => (r.muted_until = until));
    drawMute(room || (await client.history.room(current)));
    drawRooms();
    return;
  }
  if (ev.target.closest("[data-form=notifications]")) {
    notifier
      .setLevel(ev.target.value)
      .then(drawNotificationSetting)
      .catch((err) => setState("ready", `Not saved: ${err.message}`));
    return;
  }
  const settings = ev.target.closest("[data-form=settings]");
  if (settings) {
    const wanted = ev.target.checked;
    try {
      await client.saveSettings({ [ev.target.name]: wanted });
    } catch (err) {
      // Refused (the EEA under-16 lock, say): what is stored is still the other value.
      ev.target.checked = !wanted;
      setState("ready", `Not saved: ${err.message}`);
    }
  }
});

function readOpenChat() {
  if (!document.hidden && current && client) client.markRead(current).catch(() => {});
}
document.addEventListener("visibilitychange", readOpenChat);
window.addEventListener("focus", readOpenChat); // back from another window

async function main() {
  try {
    client = await CallsClient.start({
      onWait: () => setState("waiting", "CallsApp is open in another tab of this browser. This tab takes over when that one is closed."),
    });
  } catch (err) {
    setState("error", `CallsApp could not start: ${err.message}`);
    return;
  }
  window.callsapp = client; // for the browser tests and the curious
  calls = new CallManager(client);
  client.calls = calls;
  client.addEventListener("call", (ev) => calls.onEvent(ev.detail));
  calls.addEventListener("state", (ev) => {
    const call = ev.detail;
    if (call?.direction === "in" && call.state === "ringing" && call.id !== notifiedCall && shouldNotify({ mine: false, ...pageInFront() })) {
      notifiedCall = call.id;
      notifier.call({ roomId: call.roomId, sender: client.displayName(call.peer), video: call.video });
    }
    drawCall(ev.detail);
    if (current && ev.detail?.roomId === current) drawTimeline(); // the call log's line
  });
  if (client.evicted) {
    setState(
      "evicted",
      "This browser no longer has your message keys (its storage was cleared). Log out and sign in again: this browser becomes a new device, and your contacts will see it announced.",
    );
    return;
  }
  communities = new Communities({ root, el, icon, time, openPanel, userId: () => client.userId });
  client.addEventListener("community", (ev) => communities.onFrame(ev.detail));
  bots = new Bots({ root, el, icon, time, openPanel });
  client.addEventListener("bot", (ev) => bots.onFrame(ev.detail));
  client.addEventListener("rooms", () => {
    drawRooms();
    if (current) drawChatHead(); // membership, name or admins of the open room may have changed
  });
  client.addEventListener("timeline", (ev) => {
    if (ev.detail === current) drawTimeline();
  });
  client.addEventListener("message", (ev) => notifyMessage(ev.detail).catch(() => {}));
  client.addEventListener("identity", (ev) => {
    if (current) drawChatHead();
    // A verification or a new signature changes trust after the panel was drawn.
    if (devicesPanelOpen() && (ev.detail === devicesOwner || ev.detail === client.userId)) drawDevices(devicesOwner);
  });
  client.addEventListener("devices", (ev) => {
    if (devicesPanelOpen() && ev.detail?.includes?.(devicesOwner)) drawDevices(devicesOwner);
  });
  client.addEventListener("verification", (ev) => {
    openPanel("devices");
    drawDevices();
    watchVerification(ev.detail);
  });
  client.addEventListener("status", (ev) => {
    if (ev.detail === "reconnecting") setState("reconnecting", "Reconnecting…");
    else if (ev.detail === "signed-out") setState("signed-out", "You were signed out. Log in again to continue.");
  });
  client.addEventListener("ready", () => setState("ready", ""));
  setInterval(() => {
    if (current && !document.hidden) drawChatHead(); // asks the presence again when due
  }, PRESENCE_REFRESH_MS);
  setState("syncing", "Fetching new messages…");
  await drawRooms();
  bots.loadChats().catch((err) => setState("ready", `Bot chats not loaded: ${err.message}`));
  // A community's link: /messaging/?community=<id> (one by approval: ask to join from there).
  const shared = new URLSearchParams(location.search).get("community");
  if (shared) communities.open(shared).catch((err) => setState("ready", err.message));
  if (client.needsVerification) {
    setState("syncing", "");
  }
}

main();
