// node --test tests/js/: CallsApp's desktop notifications (static/messaging/js/notify.js):
// when one is shown, what it says at each privacy level, one per chat, and a click opening it.
import { test } from "node:test";
import assert from "node:assert/strict";

import { Notifier, isMuted, muteLabel, muteUntil, notificationFor, shouldNotify, unreadTitle } from "../../static/messaging/js/notify.js";

class FakeStorage {
  constructor() {
    this.items = new Map();
  }
  getItem(k) {
    return this.items.has(k) ? this.items.get(k) : null;
  }
  setItem(k, v) {
    this.items.set(k, String(v));
  }
}

/** The browser's Notification, recorded: what the page asked the system to show. */
function recordingNotification(permission = "granted", answer = "granted") {
  const shown = [];
  class N {
    static permission = permission;
    static async requestPermission() {
      N.permission = answer;
      return answer;
    }
    constructor(title, options) {
      this.title = title;
      this.options = options;
      this.closed = false;
      shown.push(this);
    }
    close() {
      this.closed = true;
    }
  }
  return { N, shown };
}

const MSG = { roomId: "!r:test", sender: "Ida", room: "Hikers", direct: false, text: "top at noon?" };

test("a message from someone else notifies only when the page is not in front", () => {
  // In front, the chat list's unread counts say it (as Signal Desktop and WhatsApp Web do).
  const base = { mine: false, hidden: false, focused: true };
  assert.equal(shouldNotify(base), false);
  assert.equal(shouldNotify({ ...base, hidden: true }), true);
  assert.equal(shouldNotify({ ...base, focused: false }), true);
  assert.equal(shouldNotify({ ...base, mine: true, hidden: true }), false);
});

test("each level says what Signal's does: name and message, name only, nothing", () => {
  assert.deepEqual(notificationFor({ ...MSG, level: "message" }), { title: "Ida in Hikers", body: "top at noon?" });
  assert.deepEqual(notificationFor({ ...MSG, direct: true, level: "message" }), { title: "Ida", body: "top at noon?" });
  assert.deepEqual(notificationFor({ ...MSG, level: "name" }), { title: "Ida in Hikers", body: "New message" });
  assert.deepEqual(notificationFor({ ...MSG, level: "hidden" }), { title: "CallsApp", body: "New message" });
  assert.equal(notificationFor({ ...MSG, level: "off" }), null);
});

test("a long message is cut, an attachment named", () => {
  const long = notificationFor({ ...MSG, level: "message", text: "x".repeat(500) });
  assert.ok(long.body.length <= 141 && long.body.endsWith("…"));
  const file = notificationFor({ ...MSG, level: "message", text: "", attachment: "photo.jpg" });
  assert.equal(file.body, "Attachment: photo.jpg");
});

test("a notification is one per chat (tagged), and a click opens that chat", () => {
  const { N, shown } = recordingNotification();
  const opened = [];
  const n = new Notifier({ Notification: N, storage: new FakeStorage(), onOpen: (id) => opened.push(id) });
  n.message(MSG);
  n.message({ ...MSG, text: "or one?" });
  assert.equal(shown.length, 2);
  assert.equal(shown[1].options.tag, "!r:test");
  assert.equal(shown[1].options.renotify, true); // replaces the first, and still alerts
  shown[1].onclick();
  assert.deepEqual(opened, ["!r:test"]);
  assert.equal(shown[1].closed, true);
});

test("nothing is shown without the browser's permission, or with notifications off", () => {
  const denied = recordingNotification("denied");
  new Notifier({ Notification: denied.N, storage: new FakeStorage() }).message(MSG);
  assert.equal(denied.shown.length, 0);
  const storage = new FakeStorage();
  const { N, shown } = recordingNotification();
  const n = new Notifier({ Notification: N, storage });
  n.setLevel("off");
  n.message(MSG);
  assert.equal(shown.length, 0);
});

test("choosing a level asks the browser's permission once, and the level is this device's", async () => {
  const storage = new FakeStorage();
  const { N } = recordingNotification("default", "granted");
  const n = new Notifier({ Notification: N, storage });
  assert.equal(n.level, "message"); // Signal's default
  assert.equal(await n.setLevel("name"), "granted");
  assert.equal(new Notifier({ Notification: N, storage }).level, "name");
});

test("a browser without notifications says so and never throws", () => {
  const n = new Notifier({ Notification: undefined, storage: new FakeStorage() });
  assert.equal(n.permission, "unsupported");
  assert.equal(n.message(MSG), null);
});

test("an incoming call notifies at every level but off", () => {
  const { N, shown } = recordingNotification();
  const n = new Notifier({ Notification: N, storage: new FakeStorage() });
  n.call({ roomId: "!r:test", sender: "Ida", video: true });
  assert.equal(shown[0].title, "Ida");
  assert.equal(shown[0].options.body, "Incoming video call");
  n.setLevel("hidden");
  n.call({ roomId: "!r:test", sender: "Ida", video: false });
  assert.equal(shown[1].title, "CallsApp");
  assert.equal(shown[1].options.body, "Incoming call");
});

test("the tab's title counts the unread messages", () => {
  assert.equal(unreadTitle("CallsApp", 0), "CallsApp");
  assert.equal(unreadTitle("CallsApp", 3), "(3) CallsApp");
});

test("a muted chat does not notify until its mute ends; 'always' never ends", () => {
  const now = Date.parse("2026-12-01T10:00:00Z");
  assert.equal(isMuted({}, now), false);
  const hour = muteUntil("3600000", now);
  assert.equal(isMuted({ muted_until: hour }, now), true);
  assert.equal(isMuted({ muted_until: hour }, now + 3600000), false);
  assert.equal(isMuted({ muted_until: muteUntil("always", now) }, now + 100 * 365 * 86400000), true);
  assert.equal(muteUntil("0", now), 0);
  const utc = (d) => d.toISOString().slice(11, 16);
  assert.equal(muteLabel({ muted_until: hour }, now, utc), "Muted until 11:00");
  assert.equal(muteLabel({ muted_until: hour + 86400000 }, now, utc, (d) => d.toISOString().slice(0, 10)), "Muted until 2026-12-02");
  assert.equal(muteLabel({ muted_until: muteUntil("always", now) }, now, utc), "Muted");
  assert.equal(muteLabel({}, now, utc), "");
});
