// CallsApp's desktop notifications: a message or a call for a chat that is not in front of
// the user. What one says is this device's choice, at Signal's levels: name and message,
// name only, or neither (someone looking over a shoulder at a locked screen). The text was
// decrypted here and goes to this computer's notification centre only, never to a server.
// One notification per chat (tagged with the room): a second message replaces the first.
// DOM-free: the page passes the browser's Notification and localStorage.

export const LEVELS = {
  message: "Name and message",
  name: "Name only",
  hidden: "No name or message",
  off: "Off",
};
const KEY = "callsapp.notifications";
const BODY_MAX = 140;

/** Whether a new message asks for a notification: not one's own, and the page is not in
 * front of the user (hidden, or another window has the focus). In front, the chat list's
 * unread counts say it, as Signal Desktop and WhatsApp Web do: opening the app after a day
 * away does not pop one notification per chat. */
export function shouldNotify({ mine, hidden, focused }) {
  return !mine && (hidden || !focused);
}

function clip(text) {
  const t = (text || "").replace(/\s+/g, " ").trim();
  return t.length > BODY_MAX ? `${t.slice(0, BODY_MAX)}…` : t;
}

/** The title and body a notification of a message shows at `level` (null: none). */
export function notificationFor({ level, sender, room, direct, text, attachment }) {
  if (level === "off") return null;
  if (level === "hidden") return { title: "CallsApp", body: "New message" };
  const title = direct || !room ? sender : `${sender} in ${room}`;
  if (level === "name") return { title, body: "New message" };
  const body = attachment && !text ? `Attachment: ${attachment}` : clip(text) || "New message";
  return { title, body };
}

// A chat's mute, Signal's choices: kept on this device with the chat (history.js).
export const MUTE_CHOICES = {
  0: "Not muted",
  3600000: "For 1 hour",
  28800000: "For 8 hours",
  604800000: "For 1 week",
  always: "Always",
};
const ALWAYS = Number.MAX_SAFE_INTEGER;

/** The end of a mute chosen now (a MUTE_CHOICES key); 0: not muted. */
export function muteUntil(choice, now = Date.now()) {
  if (choice === "always") return ALWAYS;
  const ms = Number(choice);
  return ms > 0 ? now + ms : 0;
}

export function isMuted(room, now = Date.now()) {
  return Boolean(room?.muted_until && room.muted_until > now);
}

/** What the chat's details say of its mute ("" when not muted). */
export function muteLabel(
  room,
  now = Date.now(),
  clock = (d) => d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
  day = (d) => d.toLocaleDateString(),
) {
  if (!isMuted(room, now)) return "";
  if (room.muted_until === ALWAYS) return "Muted";
  const end = new Date(room.muted_until);
  const sameDay = new Date(now).toDateString() === end.toDateString();
  return `Muted until ${sameDay ? clock(end) : day(end)}`;
}

/** The page title with the unread count first, as mail and chat tabs show it. */
export function unreadTitle(base, count) {
  return count ? `(${count}) ${base}` : base;
}

export class Notifier {
  constructor({ Notification = globalThis.Notification, storage = globalThis.localStorage, onOpen = () => {} } = {}) {
    this.Notification = typeof Notification === "function" ? Notification : null;
    this.storage = storage;
    this.onOpen = onOpen;
  }

  /** "granted", "denied", "default" (not asked yet) or "unsupported". */
  get permission() {
    return this.Notification ? this.Notification.permission : "unsupported";
  }

  get level() {
    const stored = this.storage?.getItem(KEY);
    return stored in LEVELS ? stored : "message";
  }

  /** Keep `level` for this device; asks the browser's permission when it was never asked
   * (call from a click: browsers ask only then). Returns the permission. */
  async setLevel(level) {
    if (!(level in LEVELS)) throw new Error(`no notification level ${level}`);
    this.storage?.setItem(KEY, level);
    if (level !== "off" && this.permission === "default") await this.Notification.requestPermission();
    return this.permission;
  }

  message({ roomId, sender, room, direct, text, attachment }) {
    return this.show(roomId, notificationFor({ level: this.level, sender, room, direct, text, attachment }));
  }

  call({ roomId, sender, video }) {
    const level = this.level;
    if (level === "off") return null;
    const kind = video ? "Incoming video call" : "Incoming voice call";
    const content = level === "hidden" ? { title: "CallsApp", body: "Incoming call" } : { title: sender, body: kind };
    return this.show(roomId, content);
  }

  show(roomId, content) {
    if (!content || this.permission !== "granted") return null;
    const n = new this.Notification(content.title, { body: content.body, tag: roomId, renotify: true });
    n.onclick = () => {
      this.onOpen(roomId);
      n.close();
    };
    return n;
  }
}
