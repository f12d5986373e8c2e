// CallsApp's device: the SDK's OlmMachine driven the way Element Web drives it (feed it each
// sync batch with receiveSyncChanges, send every outgoingRequests() item, report each answer
// with markRequestAsSent), the sync stream over /ws/messaging/, and the local history.
// DOM-free: the page (app.js) listens to its events.
//
// Events: "ready", "status" {detail: text}, "rooms", "timeline" {detail: roomId},
// "message" {detail: {roomId, sender, text, attachment}} (someone else's, just stored),
// "devices" {detail: userIds}, "identity" {detail: userId}, "verification" {detail: request},
// "signed-out".
import { LiveSocket } from "/static/shared/js/socket.js";

import { DelayedAck } from "./acks.js";
import { ApiError, api, enc } from "./api.js";
import { History } from "./history.js";
import * as keystore from "./keystore.js";
import { loadSdk } from "./sdk.js";

const WEEK_US = 7n * 24n * 3600n * 1000000n;
const MEDIA_DOWNLOAD = "/messaging/_matrix/client/v1/media/download/";
const MEDIA_UPLOAD = "/messaging/_matrix/media/v3/upload";
// A send frame must fit the socket's text frame limit (16 KiB); bigger events go over HTTP.
const SOCKET_SEND_MAX_CHARS = 12 * 1024;
// No answer on the socket this long: ask over HTTP with the same txn id (applied once).
const SOCKET_SEND_TIMEOUT_MS = 15000;

/** The socket dropped (or stayed silent) before answering a send: retry over HTTP. */
class SocketSendLost extends Error {}

/** Why an event could not be decrypted, in words a user understands. */
export function undecryptableReason(code, sdk) {
  const c = sdk.DecryptionErrorCode;
  switch (code) {
    case c.MissingRoomKey:
      return "The key for this message has not arrived on this device (yet). It will show when it does.";
    case c.UnknownMessageIndex:
      return "This device joined after the message was sent, so it never got its key.";
    case c.MismatchedIdentityKeys:
    case c.MismatchedSender:
      return "Refused: the message does not match the keys of the device that claims to have sent it.";
    case c.UnknownSenderDevice:
    case c.UnsignedSenderDevice:
      return "Refused: sent from a device we cannot identify.";
    case "replay":
      return "Refused: this exact ciphertext was delivered before (a replay).";
    default:
      return "Refused: this message is damaged or was tampered with and cannot be decrypted.";
  }
}

async function sha256b64(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return btoa(String.fromCharCode(...digest)).replace(/=+$/, "");
}

function txnId() {
  return `${Date.now().toString(36)}${crypto.getRandomValues(new Uint32Array(2)).join("")}`;
}

export class CallsClient extends EventTarget {
  /**
   * Start this browser's device. Resolves once the device owns its store (waiting for another
   * tab of the same device if need be: `onWait`), its keys are uploaded and the sync socket is
   * opening. If this browser lost its storage while the server still knows the device's keys,
   * resolves with `client.evicted = true` and does nothing else: the device id is never reused,
   * so the user must sign in again to become a new device.
   */
  static async start({ onWait } = {}) {
    const who = await api("GET", "account/whoami");
    const sdk = await loadSdk();
    const client = new CallsClient(sdk, who.user_id, who.device_id);
    client.releaseLock = await keystore.acquireDeviceLock(client.userId, client.deviceId, { onWait });
    if (!(await keystore.hasDeviceSecrets(client.userId, client.deviceId))) {
      const known = await api("POST", "keys/query", { device_keys: { [client.userId]: [client.deviceId] } });
      if (known.device_keys?.[client.userId]?.[client.deviceId]) {
        client.evicted = true;
        client.releaseLock();
        return client;
      }
    }
    await client.open();
    return client;
  }

  constructor(sdk, userId, deviceId) {
    super();
    this.sdk = sdk;
    this.userId = userId;
    this.deviceId = deviceId;
    this.evicted = false;
    this.names = new Map();
    this.avatars = new Map(); // user id -> profile photo address (null: none)
    this.syncQueue = Promise.resolve();
    this.sendQueue = Promise.resolve();
    this.outgoing = null;
    this.outgoingAgain = false;
    this.keyCounts = {}; // the server's one-time key counts, as last told
    this.retryQueued = null; // a retry of undecrypted events waiting in the sync queue
    this.openRoom = null;
    this.caughtUp = false;
    this.socketLive = false; // open and caught up since the last (re)connect
    this.socketSends = new Map(); // txn id -> {resolve, reject, timer}
    // Acks wait a little: they coalesce, and ride on the next send (acks.js).
    this.acks = new DelayedAck((seq) => this.socket.send({ type: "ack", seq }));
  }

  uid(id = this.userId) {
    return new this.sdk.UserId(id); // the SDK consumes these: make a new one per call
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  async open() {
    const { sdk } = this;
    const passphrase = await keystore.storePassphrase(this.userId, this.deviceId);
    this.machine = await sdk.OlmMachine.initialize(
      this.uid(),
      new sdk.DeviceId(this.deviceId),
      keystore.cryptoStoreName(this.userId, this.deviceId),
      passphrase,
    );
    const sealingKey = await keystore.deviceSealingKey(this.userId, this.deviceId);
    this.history = await History.open(this.userId, this.deviceId, sealingKey);
    this.machine.registerRoomKeyUpdatedCallback(() => this.retryUndecrypted());
    this.machine.registerDevicesUpdatedCallback((userIds) => this.onDevicesUpdated(userIds));
    this.machine.registerUserIdentityUpdatedCallback((userId) => this.onIdentityUpdated(userId.toString()));
    await this.processOutgoing(); // first of all: upload this device's keys
    await this.ensureCrossSigning();
    await this.refreshRooms();
    this.connect();
  }

  close() {
    this.socket?.close();
    this.machine?.close();
    this.history?.close();
    this.releaseLock?.();
  }

  // --- the SDK's outgoing requests

  /** Send everything the machine wants sent; one loop at a time, rerun if asked meanwhile. */
  processOutgoing() {
    if (this.outgoing) {
      this.outgoingAgain = true;
      return this.outgoing;
    }
    this.outgoing = (async () => {
      do {
        this.outgoingAgain = false;
        for (const request of await this.machine.outgoingRequests()) {
          try {
            await this.sendRequest(request);
          } catch (err) {
            // Left unmarked: the machine offers it again on the next loop.
            console.warn("CallsApp: request failed", request.type, err);
          }
        }
      } while (this.outgoingAgain);
    })().finally(() => {
      this.outgoing = null;
    });
    return this.outgoing;
  }

  async sendRequest(request) {
    const T = this.sdk.RequestType;
    let answer;
    switch (request.type) {
      case T.KeysUpload:
        answer = await api("POST", "keys/upload", request.body, { text: true });
        this.keyCounts = JSON.parse(answer).one_time_key_counts || this.keyCounts;
        break;
      case T.KeysQuery:
        answer = await api("POST", "keys/query", request.body, { text: true });
        break;
      case T.KeysClaim:
        answer = await api("POST", "keys/claim", request.body, { text: true });
        break;
      case T.ToDevice:
        answer = await api(
          "PUT",
          `sendToDevice/${enc(request.event_type)}/${enc(request.txn_id)}`,
          request.body,
          { text: true },
        );
        break;
      case T.SignatureUpload:
        answer = await api("POST", "keys/signatures/upload", request.body, { text: true });
        break;
      case T.RoomMessage:
        answer = await api(
          "PUT",
          `rooms/${enc(request.room_id)}/send/${enc(request.event_type)}/${enc(request.txn_id)}`,
          request.body,
          { text: true },
        );
        break;
      default:
        return; // key backup: not offered by this server
    }
    if (request.id) await this.machine.markRequestAsSent(request.id, request.type, answer);
  }

  /**
   * The user's cross-signing identity: the first device makes it; later devices get its
   * secrets by verifying with a device that has them (never a second identity while one of
   * those exists, since every contact sees a new identity as a key change). When none is
   * left (every browser of the user lost its storage or signed out), nothing could ever
   * hand the secrets over: this device makes a new identity, and contacts are warned.
   */
  async ensureCrossSigning() {
    const status = await this.machine.crossSigningStatus();
    if (status.hasMaster) return;
    const mine = await api("POST", "keys/query", { device_keys: { [this.userId]: [] } });
    const others = Object.keys(mine.device_keys?.[this.userId] || {}).filter((d) => d !== this.deviceId);
    if (mine.master_keys?.[this.userId] && others.length) {
      this.needsVerification = true;
      return;
    }
    const requests = await this.machine.bootstrapCrossSigning(true);
    if (requests.uploadKeysRequest) await this.sendRequest(requests.uploadKeysRequest);
    await api("POST", "keys/device_signing/upload", requests.uploadSigningKeysRequest.body);
    await this.sendRequest(requests.uploadSignaturesRequest);
  }

  // --- the sync stream

  connect() {
    this.socket = new LiveSocket("/ws/messaging/");
    this.socket.addEventListener("open", async () => {
      const lastSeq = await this.history.getMeta("last_seq", 0);
      this.socket.send({ type: "hello", last_seq: lastSeq });
      this.emit("status", "connected");
    });
    this.socket.addEventListener("close", (ev) => {
      this.socketLive = false;
      this.acks.reset();
      this.dropSocketSends();
      this.emit("status", ev.detail.final ? "signed-out" : "reconnecting");
      if (ev.detail.final) this.emit("signed-out");
    });
    this.socket.on("sync", (msg) => this.enqueueSync(msg));
    this.socket.on("sent", (msg) => this.settleSocketSend(msg.txn_id, null, msg));
    // Communities (plain, not E2E): live and lossy, no seq; the page re-reads on opening.
    for (const type of ["community.post", "community.post_deleted", "community.likes"]) {
      this.socket.on(type, (msg) => this.emit("community", msg));
    }
    // Bot chats (plain, not E2E): live and lossy too; opening a chat reads it again.
    this.socket.on("bot.message", (msg) => this.emit("bot", msg));
    this.socket.on("error", (msg) => {
      if (msg.ref && this.socketSends.has(msg.ref)) {
        this.settleSocketSend(msg.ref, new ApiError(400, msg.code, msg.detail, msg));
      } else {
        console.warn("CallsApp: socket error", msg.code, msg.detail);
      }
    });
    this.socket.on("caught_up", () => {
      this.socketLive = true;
      this.syncQueue = this.syncQueue.then(() => {
        this.caughtUp = true;
        this.emit("ready");
      });
    });
    this.socket.connect();
  }

  enqueueSync(msg) {
    this.syncQueue = this.syncQueue
      .then(() => this.processSync(msg.sync || {}))
      .then(async () => {
        if (msg.seq === null || msg.seq === undefined) return;
        // Everything in the frame is stored: only now may the server forget it.
        await this.history.setMeta("last_seq", msg.seq);
        // The backlog after a hello at once; live frames after a short wait (acks.js).
        this.acks.stored(msg.seq, { now: !this.socketLive });
      })
      .catch((err) => {
        // Not acked: the frame comes again after the next hello.
        console.error("CallsApp: sync frame failed", err);
      });
  }

  async processSync(sync) {
    const { sdk } = this;
    const toDevice = sync.to_device?.events || [];
    const lists = sync.device_lists || {};
    const counts = sync.device_one_time_keys_count;
    if (counts) this.keyCounts = counts;
    // Unused fallback key types travel with the key counts; absent counts mean "no news".
    const fallback = counts ? new Set(sync.device_unused_fallback_key_types || []) : undefined;
    const processed = await this.machine.receiveSyncChanges(
      JSON.stringify(toDevice),
      new sdk.DeviceLists(
        (lists.changed || []).map((u) => this.uid(u)),
        (lists.left || []).map((u) => this.uid(u)),
      ),
      // The server sends the counts when they change (on hello, after a claim, in the
      // upload's answer), not in every frame; the machine reads a missing count as 0 and
      // uploads another batch of keys: it gets the last counts known instead.
      new Map(Object.entries(this.keyCounts)),
      fallback,
    );
    for (const event of processed || []) this.onToDevice(event);
    if (this.needsVerification) await this.adoptCrossSigning();
    const outgoing = this.processOutgoing();
    for (const [roomId, room] of Object.entries(sync.rooms?.join || {})) {
      for (const event of room.timeline?.events || []) await this.onRoomEvent(roomId, event);
      for (const event of room.ephemeral?.events || []) await this.onEphemeral(roomId, event);
    }
    for (const [roomId, room] of Object.entries(sync.rooms?.leave || {})) {
      for (const event of room.timeline?.events || []) await this.onRoomEvent(roomId, event);
    }
    await outgoing;
  }

  onToDevice(processed) {
    let raw;
    try {
      raw = JSON.parse(processed.rawEvent);
    } catch {
      return;
    }
    if (raw.type === "m.key.verification.request") {
      const request = this.machine.getVerificationRequest(this.uid(raw.sender), raw.content.transaction_id);
      if (request) this.emit("verification", request);
    }
  }

  // --- room events

  async ensureRoom(roomId) {
    const known = await this.history.room(roomId);
    if (known && known.fetched) return known;
    return this.fetchRoom(roomId);
  }

  async fetchRoom(roomId) {
    let state = [];
    let joined = {};
    try {
      state = await api("GET", `rooms/${enc(roomId)}/state`);
      joined = (await api("GET", `rooms/${enc(roomId)}/joined_members`)).joined || {};
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
    }
    for (const [user, info] of Object.entries(joined)) {
      this.names.set(user, info.display_name || user);
      this.avatars.set(user, info.avatar_url || null);
    }
    await this.saveNames();
    await this.trackUsers(Object.keys(joined));
    const room = await this.history.updateRoom(roomId, (r) => {
      r.fetched = true;
      r.members = Object.keys(joined);
      for (const ev of state) this.applyState(r, ev);
      if (!r.members.includes(this.userId) && Object.keys(joined).length) r.left = true;
    });
    this.emit("rooms");
    return room;
  }

  /**
   * Follow these users' devices (as Element does for every member of an encrypted room):
   * the machine only queries the keys of tracked users, and ignores a verification request
   * from a device it does not know.
   */
  async trackUsers(userIds) {
    if (!userIds.length) return;
    await this.machine.updateTrackedUsers(userIds.map((u) => this.uid(u)));
    this.processOutgoing(); // the key query runs alongside; a failed one is offered again
  }

  applyState(room, ev) {
    const c = ev.content || {};
    // A room's state fetched over HTTP can arrive after a newer event of the same kind came
    // through the sync (a rename while the room was being fetched): the newer one stays.
    const slot = `${ev.type}|${ev.state_key ?? ""}`;
    room.stateTs = room.stateTs || {};
    if (ev.origin_server_ts && room.stateTs[slot] > ev.origin_server_ts) return;
    if (ev.origin_server_ts) room.stateTs[slot] = ev.origin_server_ts;
    if (ev.type === "m.room.name") room.name = c.name || "";
    if (ev.type === "m.room.create") {
      room.creator = ev.sender;
      if (c.is_direct !== undefined) room.is_direct = Boolean(c.is_direct);
    }
    if (ev.type === "m.room.power_levels") {
      room.admins = Object.entries(c.users || {})
        .filter(([, level]) => level >= 100)
        .map(([u]) => u);
      // 1:1 chats have no admins (nobody can add or remove anyone there).
      if (c.users && !room.admins.length && room.is_direct === undefined) room.is_direct = true;
    }
    if (ev.type === "m.room.member") {
      const user = ev.state_key;
      if (c.displayname) this.names.set(user, c.displayname);
      if (c.membership === "join") this.avatars.set(user, c.avatar_url || null);
      if (c.membership === "join" && !room.members.includes(user)) room.members.push(user);
      if (c.membership === "leave") {
        room.members = room.members.filter((u) => u !== user);
        if (user === this.userId) room.left = true;
      }
      if (c.membership === "join" && user === this.userId) room.left = false;
    }
  }

  async saveNames() {
    await this.history.setMeta("names", Object.fromEntries(this.names));
    await this.history.setMeta("avatars", Object.fromEntries(this.avatars));
  }

  displayName(userId) {
    return this.names.get(userId) || userId;
  }

  /** The user's profile photo address, or null. */
  avatar(userId) {
    return this.avatars.get(userId) || null;
  }

  async onRoomEvent(roomId, ev) {
    if (ev.event_id && (await this.history.event(ev.event_id))) return; // at-least-once: dedupe
    await this.ensureRoom(roomId);
    if (ev.state_key !== undefined) {
      await this.onStateEvent(roomId, ev);
    } else if (ev.type === "m.room.redaction") {
      await this.onRedaction(roomId, ev);
    } else if (ev.type === "m.room.encrypted") {
      await this.decryptAndStore(roomId, ev);
    }
    this.emit("timeline", roomId);
  }

  async onStateEvent(roomId, ev) {
    const before = await this.history.room(roomId);
    await this.history.updateRoom(roomId, (r) => this.applyState(r, ev));
    await this.saveNames();
    const c = ev.content || {};
    let text = null;
    const room = await this.history.room(roomId);
    if (room?.is_direct && ev.type !== "m.room.name") {
      // A 1:1 chat: who joined and who is admin is noise.
    } else if (ev.type === "m.room.create") {
      text = `${this.displayName(ev.sender)} created the group`;
    } else if (ev.type === "m.room.member") {
      const who = ev.state_key === this.userId ? "you" : this.displayName(ev.state_key);
      const by = this.displayName(ev.sender);
      if (c.membership === "join") {
        text = ev.sender === ev.state_key ? `${this.displayName(ev.state_key)} joined` : `${by} added ${who}`;
      }
      if (c.membership === "leave") {
        text = ev.sender === ev.state_key ? `${this.displayName(ev.state_key)} left` : `${by} removed ${who}`;
      }
    } else if (ev.type === "m.room.name" && before?.name !== c.name) {
      text = `${this.displayName(ev.sender)} named the group "${c.name}"`;
    } else if (ev.type === "m.room.power_levels" && before?.admins?.length) {
      const now = (await this.history.room(roomId)).admins || [];
      const added = now.filter((u) => !before.admins.includes(u)).map((u) => this.displayName(u));
      const removed = before.admins.filter((u) => !now.includes(u)).map((u) => this.displayName(u));
      if (added.length) text = `${added.join(", ")} can now manage the group`;
      else if (removed.length) text = `${removed.join(", ")} no longer manage${removed.length > 1 ? "" : "s"} the group`;
    }
    if (ev.type === "m.room.member" && c.membership === "join" && ev.sender === ev.state_key) text = null;
    if (ev.type === "m.room.member" && c.membership === "join") await this.trackUsers([ev.state_key]);
    if (ev.type === "m.room.member" && c.membership === "leave") {
      // A member left: the next message starts a new room key they never get.
      await this.machine.invalidateGroupSession(new this.sdk.RoomId(roomId));
    }
    if (text) {
      await this.history.putEvent(
        { event_id: ev.event_id, room_id: roomId, ts: ev.origin_server_ts || Date.now(), kind: "notice", sender: ev.sender },
        { body: text },
      );
    }
    this.emit("rooms");
  }

  async onRedaction(roomId, ev) {
    const target = ev.redacts || ev.content?.redacts;
    if (target) {
      await this.history.updateEvent(target, (r) => {
        r.redacted = true;
        r.sealed = null;
        r.raw = null;
      });
    }
    await this.history.putEvent({ event_id: ev.event_id, room_id: roomId, ts: ev.origin_server_ts, kind: "hidden" }, null);
  }

  async decryptAndStore(roomId, ev) {
    const { sdk } = this;
    const ciphertext = ev.content?.ciphertext || "";
    const fingerprint = await sha256b64(new TextEncoder().encode(ciphertext));
    const base = {
      event_id: ev.event_id,
      room_id: roomId,
      sender: ev.sender,
      ts: ev.origin_server_ts || Date.now(),
      mine: ev.sender === this.userId,
      status: ev.sender === this.userId ? "sent" : undefined,
      fingerprint,
    };
    const seen = await this.history.getMeta(`ct:${fingerprint}`);
    if (seen && seen !== ev.event_id) {
      // The same ciphertext under a new event id: someone replays what they captured.
      await this.history.putEvent({ ...base, kind: "refused", error: "replay" }, null);
      return;
    }
    try {
      const decrypted = await this.machine.decryptRoomEvent(
        JSON.stringify(ev),
        new sdk.RoomId(roomId),
        new sdk.DecryptionSettings(sdk.TrustRequirement.Untrusted),
      );
      const clear = JSON.parse(decrypted.event);
      const shield = decrypted.shieldState(false);
      await this.history.setMeta(`ct:${fingerprint}`, ev.event_id);
      await this.storeDecrypted(base, clear, { color: shield.color, message: shield.message || null });
    } catch (err) {
      const code = err?.code ?? null;
      const retryable = code === sdk.DecryptionErrorCode.MissingRoomKey;
      await this.history.putEvent(
        { ...base, kind: retryable ? "utd" : "refused", error: code, raw: retryable ? ev : null },
        null,
      );
      if (!base.mine) await this.bumpUnread(roomId);
    }
  }

  async storeDecrypted(base, clear, shield) {
    if (typeof clear.type === "string" && clear.type.startsWith("m.call.")) {
      // Kept as seen (not shown), so a redelivery after a reconnect does not ring again.
      await this.history.putEvent({ ...base, kind: "hidden" }, null);
      await this.onCallEvent(base.room_id, base.sender, clear.type, clear.content || {}, base.ts);
      return;
    }
    if (clear.type !== "m.room.message") {
      await this.history.putEvent({ ...base, kind: "hidden" }, null);
      return;
    }
    const content = clear.content || {};
    await this.history.putEvent({ ...base, kind: "message", shield, error: null, raw: null }, content);
    if (!base.mine) {
      await this.bumpUnread(base.room_id, base.ts);
      const file = content.file ? content.body || "file" : null;
      this.emit("message", { roomId: base.room_id, sender: base.sender, text: file ? "" : content.body, attachment: file });
    }
    else await this.history.updateRoom(base.room_id, (r) => (r.last_ts = Math.max(r.last_ts, base.ts)));
    if (content.file?.url) this.fetchAttachment(base.event_id, content).catch(() => {});
  }

  async bumpUnread(roomId, ts = Date.now()) {
    await this.history.updateRoom(roomId, (r) => {
      r.last_ts = Math.max(r.last_ts || 0, ts);
      // Unread unless its chat is open in front of the user (a window behind another's too).
      const doc = globalThis.document;
      if (this.openRoom !== roomId || doc?.hidden || (doc && !doc.hasFocus())) r.unread = (r.unread || 0) + 1;
    });
    this.emit("rooms");
  }

  /**
   * Decrypt again what waited for a room key, in the sync queue: run beside it, a
   * redaction processed meanwhile was overwritten and the message came back. The machine
   * calls this from inside a frame's receiveSyncChanges, so it runs after that frame.
   */
  retryUndecrypted() {
    if (this.retryQueued) return this.retryQueued;
    const job = this.syncQueue.then(() => {
      this.retryQueued = null;
      return this.retryUndecryptedNow();
    });
    this.retryQueued = job;
    this.syncQueue = job.catch((err) => console.error("CallsApp: retry of undecrypted events failed", err));
    return job;
  }

  async retryUndecryptedNow() {
    for (const record of await this.history.undecrypted()) {
      if (!record.raw) continue;
      await this.history.deleteEvent(record.event_id);
      await this.decryptAndStore(record.room_id, record.raw);
      this.emit("timeline", record.room_id);
    }
  }

  async onEphemeral(roomId, ev) {
    if (ev.type === "org.callsapp.delivered") {
      for (const id of ev.content?.event_ids || []) {
        const updated = await this.history.updateEvent(id, (r) => {
          if (r.status !== "seen") r.status = "delivered";
        });
        // The tick can overtake the answer to our own send: keep it for when that comes.
        if (!updated) await this.history.setMeta(`status:${id}`, "delivered");
      }
    } else if (ev.type === "m.receipt") {
      for (const [eventId, receipt] of Object.entries(ev.content || {})) {
        if (!receipt["m.read"]) continue;
        const read = await this.history.event(eventId);
        if (!read) continue;
        // Read receipts are cumulative: everything of mine up to that event was seen.
        for (const r of await this.history.timeline(roomId)) {
          if (r.mine && r.ts <= read.ts) await this.history.updateEvent(r.event_id, (x) => (x.status = "seen"));
        }
      }
    }
    this.emit("timeline", roomId);
  }

  // --- sending

  /** The room's members get this device's current room key (Olm sessions made first). */
  async shareRoomKey(roomId) {
    const { sdk } = this;
    const joined = (await api("GET", `rooms/${enc(roomId)}/joined_members`)).joined || {};
    const members = Object.keys(joined);
    await this.machine.updateTrackedUsers(members.map((u) => this.uid(u)));
    await this.processOutgoing(); // key queries for new or changed members
    // And ask the server once more, now: a device added a moment ago (whose device-list
    // notice is still on its way) gets this message's key too.
    await this.sendRequest(this.machine.queryKeysForUsers(members.map((u) => this.uid(u))));
    const claim = await this.machine.getMissingSessions(members.map((u) => this.uid(u)));
    if (claim) await this.sendRequest(claim);
    const settings = new sdk.EncryptionSettings();
    settings.algorithm = sdk.EncryptionAlgorithm.MegolmV1AesSha2;
    settings.rotationPeriod = WEEK_US;
    settings.rotationPeriodMessages = 100n;
    settings.historyVisibility = sdk.HistoryVisibility.Joined;
    settings.sharingStrategy = sdk.CollectStrategy.allDevices();
    const requests = await this.machine.shareRoomKey(
      new sdk.RoomId(roomId),
      members.map((u) => this.uid(u)),
      settings,
    );
    for (const request of requests) await this.sendRequest(request);
  }

  /** Encrypt and send one m.room.message content; resolves with its event id. */
  sendMessage(roomId, content) {
    const txn = txnId();
    const localId = `~${txn}`;
    const job = this.sendQueue.then(async () => {
      const ts = Date.now();
      await this.history.putEvent(
        { event_id: localId, room_id: roomId, sender: this.userId, ts, mine: true, kind: "message", status: "sending", txn_id: txn },
        content,
      );
      this.emit("timeline", roomId);
      try {
        await this.shareRoomKey(roomId);
        const encrypted = await this.machine.encryptRoomEvent(
          new this.sdk.RoomId(roomId),
          "m.room.message",
          JSON.stringify(content),
        );
        const { event_id: eventId } = await this.sendRoomEvent(roomId, txn, encrypted);
        const fingerprint = await sha256b64(new TextEncoder().encode(JSON.parse(encrypted).ciphertext || ""));
        await this.history.setMeta(`ct:${fingerprint}`, eventId);
        const local = await this.history.event(localId);
        await this.history.deleteEvent(localId);
        // The delivered tick may have raced ahead of this answer.
        const early = await this.history.getMeta(`status:${eventId}`);
        await this.history.putEvent({ ...local, event_id: eventId, status: early || "sent", fingerprint });
        await this.history.updateRoom(roomId, (r) => (r.last_ts = Math.max(r.last_ts || 0, ts)));
        return eventId;
      } catch (err) {
        await this.history.updateEvent(localId, (r) => {
          r.status = "failed";
          r.error = err.message;
        });
        throw err;
      } finally {
        this.emit("timeline", roomId);
        this.emit("rooms");
      }
    });
    this.sendQueue = job.catch(() => {});
    return job;
  }

  /**
   * Store one encrypted room event: over the sync socket when it is open and caught up (no
   * HTTP request per message), else over HTTP. A socket that drops before answering hands
   * the same txn id to HTTP, and the server applies a txn id once.
   */
  async sendRoomEvent(roomId, txn, encrypted) {
    if (this.socketLive && encrypted.length <= SOCKET_SEND_MAX_CHARS) {
      try {
        return await this.socketSend(roomId, txn, encrypted);
      } catch (err) {
        if (!(err instanceof SocketSendLost)) throw err;
      }
    }
    return api("PUT", `rooms/${enc(roomId)}/send/m.room.encrypted/${enc(txn)}`, encrypted);
  }

  socketSend(roomId, txn, encrypted) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => this.settleSocketSend(txn, new SocketSendLost("no answer")),
        SOCKET_SEND_TIMEOUT_MS,
      );
      this.socketSends.set(txn, { resolve, reject, timer });
      const frame = { type: "send", room_id: roomId, txn_id: txn, content: JSON.parse(encrypted) };
      const ack = this.acks.take();
      if (ack !== undefined) frame.ack = ack;
      if (this.socket.send(frame) !== true) this.settleSocketSend(txn, new SocketSendLost("not sent"));
    });
  }

  settleSocketSend(txn, err, answer) {
    const pending = this.socketSends.get(txn);
    if (!pending) return;
    this.socketSends.delete(txn);
    clearTimeout(pending.timer);
    if (err) pending.reject(err);
    else pending.resolve(answer);
  }

  dropSocketSends() {
    for (const txn of [...this.socketSends.keys()]) {
      this.settleSocketSend(txn, new SocketSendLost("socket closed"));
    }
  }

  /** Encrypt and send one m.call.* event (calls.js); it goes in the call log here too. */
  async sendCallEvent(roomId, type, content) {
    await this.shareRoomKey(roomId);
    const encrypted = await this.machine.encryptRoomEvent(new this.sdk.RoomId(roomId), type, JSON.stringify(content));
    const { event_id: eventId } = await this.sendRoomEvent(roomId, txnId(), encrypted);
    const fingerprint = await sha256b64(new TextEncoder().encode(JSON.parse(encrypted).ciphertext || ""));
    await this.history.setMeta(`ct:${fingerprint}`, eventId);
    await this.logCall(roomId, this.userId, type, content, Date.now());
    return eventId;
  }

  /** A decrypted call event: into the call log, then to the call manager (calls.js). */
  async onCallEvent(roomId, sender, type, content, ts) {
    if (typeof content.call_id !== "string" || !content.call_id) return;
    if (!(await this.history.room(roomId))?.is_direct) return; // calls are 1:1 only
    await this.logCall(roomId, sender, type, content, ts);
    this.emit("call", { roomId, sender, type, content, ts });
  }

  /**
   * The call log: one timeline entry a call (invite, answer, end), kept as this device's
   * record of it like a message, and never offered for deletion. Only answered calls get a
   * length; an incoming call nobody answered is a missed call.
   */
  async logCall(roomId, sender, type, content, ts) {
    const id = `call:${content.call_id}`;
    const existing = (await this.history.event(id)) || null;
    const log = existing ? (await this.history.unseal(existing.sealed)) || {} : {};
    const record = existing || { event_id: id, room_id: roomId, ts, kind: "call", sender, mine: sender === this.userId };
    if (type === "m.call.invite") {
      Object.assign(record, { ts, sender, mine: sender === this.userId });
      log.video = /\nm=video /.test(content.offer?.sdp || "");
    } else if (type === "m.call.answer") {
      log.answered_ts ??= ts;
    } else if (content.reason === "replaced") {
      // One of two calls crossed in the air: the other is the call; this one leaves no line.
      await this.history.deleteEvent(id);
      this.emit("timeline", roomId);
      return;
    } else if (type === "m.call.hangup" || type === "m.call.reject") {
      log.ended_ts ??= ts;
      log.reason ??= type === "m.call.reject" ? "declined" : content.reason || "user_hangup";
    } else {
      return;
    }
    await this.history.putEvent(record, log);
    if (type === "m.call.invite" && !record.mine) await this.bumpUnread(roomId, ts);
    this.emit("timeline", roomId);
  }

  sendText(roomId, body) {
    return this.sendMessage(roomId, { msgtype: "m.text", body });
  }

  /** Encrypt a file with the SDK's attachment encryption, upload only ciphertext, send its key. */
  async sendFile(roomId, file) {
    const plain = new Uint8Array(await file.arrayBuffer());
    const encrypted = this.sdk.Attachment.encrypt(plain);
    const info = JSON.parse(encrypted.mediaEncryptionInfo);
    const { content_uri: url } = await api("POST", `${MEDIA_UPLOAD}?room_id=${enc(roomId)}`, encrypted.encryptedData);
    const msgtype = file.type.startsWith("image/") ? "m.image" : "m.file";
    const content = {
      msgtype,
      body: file.name,
      info: { mimetype: file.type || "application/octet-stream", size: file.size },
      file: { ...info, url },
    };
    await this.history.setMeta(`file:${url}`, await this.history.sealBytes(plain));
    return this.sendMessage(roomId, content);
  }

  /**
   * The decrypted bytes of an attachment: kept sealed on this device after the first fetch.
   * One fetch per file at a time: the server deletes the blob once every device has it.
   */
  attachment(content) {
    const url = content.file?.url;
    this.fetching ??= new Map();
    if (!this.fetching.has(url)) {
      this.fetching.set(
        url,
        this.fetchAndOpen(content).finally(() => this.fetching.delete(url)),
      );
    }
    return this.fetching.get(url);
  }

  async fetchAndOpen(content) {
    const url = content.file.url;
    const cached = await this.history.getMeta(`file:${url}`);
    if (cached) return this.history.unsealBytes(cached);
    const [server, mediaId] = url.slice("mxc://".length).split("/");
    const ciphertext = await api("GET", `${MEDIA_DOWNLOAD}${enc(server)}/${enc(mediaId)}`, undefined, { bytes: true });
    // Check the digest the sender put inside the encrypted event before decrypting anything.
    if ((await sha256b64(ciphertext)) !== content.file.hashes?.sha256) {
      throw new Error("The file does not match its checksum; it was damaged or tampered with.");
    }
    const { url: _url, ...info } = content.file;
    const plain = this.sdk.Attachment.decrypt(new this.sdk.EncryptedAttachment(ciphertext, JSON.stringify(info)));
    await this.history.setMeta(`file:${url}`, await this.history.sealBytes(plain));
    return plain;
  }

  async fetchAttachment(eventId, content) {
    try {
      await this.attachment(content);
    } catch (err) {
      await this.history.updateEvent(eventId, (r) => (r.fileError = err.message));
    }
    this.emit("timeline", (await this.history.event(eventId))?.room_id);
  }

  /**
   * Delete for everyone. The server cannot read which attachments the message carries, so
   * the redaction names them: it deletes those this user uploaded, not only the text.
   */
  async redact(roomId, eventId) {
    const record = await this.history.event(eventId);
    const content = await this.history.unseal(record?.sealed);
    const media = [content?.file?.url, content?.info?.thumbnail_file?.url].filter((u) => typeof u === "string");
    await api("PUT", `rooms/${enc(roomId)}/redact/${enc(eventId)}/${enc(txnId())}`, media.length ? { media } : {});
    await this.history.updateEvent(eventId, (r) => {
      r.redacted = true;
      r.sealed = null;
    });
    this.emit("timeline", roomId);
  }

  async markRead(roomId) {
    await this.history.updateRoom(roomId, (r) => (r.unread = 0));
    this.emit("rooms");
    const events = (await this.history.timeline(roomId)).filter((e) => !e.mine && e.kind === "message");
    const last = events.at(-1);
    if (last && last.event_id !== (await this.history.getMeta(`read:${roomId}`))) {
      await this.history.setMeta(`read:${roomId}`, last.event_id);
      await api("POST", `rooms/${enc(roomId)}/receipt/m.read/${enc(last.event_id)}`, {}).catch(() => {});
    }
  }

  // --- rooms, people, settings

  async refreshRooms() {
    this.names = new Map(Object.entries((await this.history.getMeta("names")) || {}));
    this.avatars = new Map(Object.entries((await this.history.getMeta("avatars")) || {}));
    const { joined_rooms: joined } = await api("GET", "joined_rooms");
    for (const roomId of joined) await this.ensureRoom(roomId);
    for (const room of await this.history.rooms()) {
      if (!joined.includes(room.room_id) && !room.left) await this.history.updateRoom(room.room_id, (r) => (r.left = true));
    }
    this.emit("rooms");
  }

  async findUser(term) {
    const { results } = await api("POST", "user_directory/search", { search_term: term.trim() });
    return results[0] || null;
  }

  async startDirect(term) {
    const found = await this.findUser(term);
    if (!found) return null;
    this.names.set(found.user_id, found.display_name || found.user_id);
    await this.saveNames();
    for (const room of await this.history.rooms()) {
      if (room.is_direct && !room.left && room.members.includes(found.user_id)) return room.room_id;
    }
    const { room_id: roomId } = await api("POST", "createRoom", { invite: [found.user_id], is_direct: true });
    await this.history.updateRoom(roomId, (r) => (r.is_direct = true));
    await this.fetchRoom(roomId);
    return roomId;
  }

  async createGroup(name, userIds) {
    const { room_id: roomId } = await api("POST", "createRoom", { name, invite: userIds, is_direct: false });
    await this.fetchRoom(roomId);
    return roomId;
  }

  async addMember(roomId, userId) {
    await api("POST", `rooms/${enc(roomId)}/invite`, { user_id: userId });
    await this.fetchRoom(roomId);
  }

  async removeMember(roomId, userId) {
    await api("POST", `rooms/${enc(roomId)}/kick`, { user_id: userId });
    await this.machine.invalidateGroupSession(new this.sdk.RoomId(roomId));
    await this.fetchRoom(roomId);
  }

  async leaveRoom(roomId) {
    await api("POST", `rooms/${enc(roomId)}/leave`, {});
    await this.history.updateRoom(roomId, (r) => (r.left = true));
    this.emit("rooms");
  }

  async renameGroup(roomId, name) {
    await api("PUT", `rooms/${enc(roomId)}/state/m.room.name/`, { name });
    await this.fetchRoom(roomId);
  }

  async setAdmin(roomId, userId, admin) {
    await api("PUT", `rooms/${enc(roomId)}/state/m.room.power_levels/`, { users: { [userId]: admin ? 100 : 0 } });
    await this.fetchRoom(roomId);
  }

  async blocked() {
    const data = await api("GET", `user/${enc(this.userId)}/account_data/m.ignored_user_list`);
    return Object.keys(data.ignored_users || {});
  }

  async setBlocked(userId, block) {
    const current = new Set(await this.blocked());
    if (block) current.add(userId);
    else current.delete(userId);
    const ignored = Object.fromEntries([...current].map((u) => [u, {}]));
    await api("PUT", `user/${enc(this.userId)}/account_data/m.ignored_user_list`, { ignored_users: ignored });
  }

  settings() {
    return api("GET", "/messaging/api/settings");
  }

  saveSettings(values) {
    return api("PUT", "/messaging/api/settings", values);
  }

  async presence(userId) {
    return (await api("GET", `presence/${enc(userId)}/status`)).presence;
  }

  undelivered(roomId) {
    return api("GET", `/messaging/api/rooms/${enc(roomId)}/undelivered`);
  }

  // --- devices, identities, verification

  async devicesOf(userId) {
    await this.machine.updateTrackedUsers([this.uid(userId)]);
    await this.processOutgoing();
    const devices = await this.machine.getUserDevices(this.uid(userId), 5);
    return devices.devices().map((d) => ({
      deviceId: d.deviceId.toString(),
      name: d.displayName || "",
      verified: d.isVerified(),
      crossSigned: d.isCrossSigningTrusted(),
      ed25519: d.getKey(this.sdk.DeviceKeyAlgorithmName.Ed25519)?.toBase64() || "",
      device: d,
    }));
  }

  async onDevicesUpdated(userIds) {
    for (const userId of userIds) {
      const devices = await this.machine.getUserDevices(this.uid(userId));
      const now = devices.keys().map((d) => d.toString());
      const before = await this.history.getMeta(`devices:${userId}`);
      await this.history.setMeta(`devices:${userId}`, now);
      const added = before ? now.filter((d) => !before.includes(d)) : [];
      if (!added.length) continue;
      const who = userId === this.userId ? "You" : this.displayName(userId);
      for (const room of await this.history.rooms()) {
        if (room.left || !room.members.includes(userId)) continue;
        await this.history.putEvent(
          { event_id: `~dev:${userId}:${added.join(",")}:${room.room_id}`, room_id: room.room_id, ts: Date.now(), kind: "notice", sender: userId },
          { body: `${who} added a device (${added.join(", ")})` },
        );
        this.emit("timeline", room.room_id);
      }
    }
    this.emit("devices", userIds);
  }

  async identity(userId) {
    return this.machine.getIdentity(this.uid(userId));
  }

  /** Resolves once this device trusts that one (checked every 250 ms, for 10 s at most). */
  async untilDeviceVerified(userId, deviceId) {
    for (let tries = 0; tries < 40; tries++) {
      const device = await this.machine.getDevice(this.uid(userId), new this.sdk.DeviceId(deviceId));
      if (device?.isVerified()) return true;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    return false;
  }

  /** Did we verify this user (our user-signing key signed their master key)? */
  async identityVerified(userId) {
    return Boolean((await this.identity(userId))?.isVerified());
  }

  async onIdentityUpdated(userId) {
    const identity = await this.identity(userId);
    if (identity && userId !== this.userId) {
      if (identity.identityNeedsUserApproval?.() || identity.hasVerificationViolation?.()) {
        await this.history.setMeta(`keychange:${userId}`, true);
      }
    }
    // Told of every change, not only a warning: a verification signature reaches the store
    // after the emoji comparison ended, and an open safety page must show it.
    this.emit("identity", userId);
  }

  async keyChanged(userId) {
    return Boolean(await this.history.getMeta(`keychange:${userId}`));
  }

  /** The user has seen that a contact's keys changed: accept the new identity. */
  async acknowledgeKeyChange(userId) {
    const identity = await this.identity(userId);
    // A verified contact's change is both a verification violation and a pin violation.
    if (identity?.hasVerificationViolation?.()) await identity.withdrawVerification();
    if (identity?.identityNeedsUserApproval?.()) await identity.pinCurrentMasterKey();
    await this.history.setMeta(`keychange:${userId}`, false);
    this.emit("identity", userId);
  }

  /** Ask one device (ours or a contact's) to compare emoji with us. */
  async requestVerification(userId, deviceId) {
    const device = await this.machine.getDevice(this.uid(userId), new this.sdk.DeviceId(deviceId));
    if (!device) throw new Error("unknown device");
    const [request, outgoing] = device.requestVerification([this.sdk.VerificationMethod.SasV1]);
    await this.sendRequest(outgoing);
    return request;
  }

  async sendVerificationRequest(outgoing) {
    if (outgoing) await this.sendRequest(outgoing);
  }

  /**
   * Once a verified device of ours has sent the cross-signing secrets, sign this device with
   * them: contacts then see it as the user's own, not as an unknown newcomer.
   */
  async adoptCrossSigning() {
    const status = await this.machine.crossSigningStatus();
    if (!status.hasSelfSigning) return;
    this.needsVerification = false;
    const own = await this.machine.getDevice(this.uid(), new this.sdk.DeviceId(this.deviceId));
    if (own && !own.isCrossSigningTrusted()) await this.sendRequest(await own.verify());
    this.emit("devices", [this.userId]);
  }

  /** After verifying one of our own devices: fetch the cross-signing secrets it holds. */
  async afterVerification() {
    await this.machine.requestMissingSecretsIfNeeded();
    await this.processOutgoing();
  }
}
