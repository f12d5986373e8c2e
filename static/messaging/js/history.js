// What this device keeps of its conversations, in IndexedDB. The server forgets a message once
// every device has it, so this is the only copy: message content is sealed with the device's
// non-extractable AES-GCM key (keystore.js). Room metadata the server also knows (ids,
// members, names) is kept in the clear.
import { historyStoreName } from "./keystore.js";

function idb(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

export class History {
  static async open(userId, deviceId, sealingKey) {
    const request = indexedDB.open(historyStoreName(userId, deviceId), 1);
    request.onupgradeneeded = () => {
      const db = request.result;
      db.createObjectStore("rooms", { keyPath: "room_id" });
      const events = db.createObjectStore("events", { keyPath: "event_id" });
      events.createIndex("room_ts", ["room_id", "ts"]);
      events.createIndex("txn", "txn_id", { unique: false });
      db.createObjectStore("meta");
    };
    return new History(await idb(request), sealingKey);
  }

  constructor(db, key) {
    this.db = db;
    this.key = key;
  }

  close() {
    this.db.close();
  }

  async seal(value) {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const plain = new TextEncoder().encode(JSON.stringify(value));
    const data = await crypto.subtle.encrypt({ name: "AES-GCM", iv }, this.key, plain);
    return { iv, data };
  }

  async unseal(sealed) {
    if (!sealed) return null;
    const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: sealed.iv }, this.key, sealed.data);
    return JSON.parse(new TextDecoder().decode(plain));
  }

  async sealBytes(bytes) {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    return { iv, data: await crypto.subtle.encrypt({ name: "AES-GCM", iv }, this.key, bytes) };
  }

  async unsealBytes(sealed) {
    return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: sealed.iv }, this.key, sealed.data));
  }

  async tx(stores, mode, fn) {
    const tx = this.db.transaction(stores, mode);
    const result = await fn(tx);
    await new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
    return result;
  }

  async getMeta(key, fallback = null) {
    const value = await this.tx(["meta"], "readonly", (t) => idb(t.objectStore("meta").get(key)));
    return value === undefined ? fallback : value;
  }

  setMeta(key, value) {
    return this.tx(["meta"], "readwrite", (t) => idb(t.objectStore("meta").put(value, key)));
  }

  room(roomId) {
    return this.tx(["rooms"], "readonly", (t) => idb(t.objectStore("rooms").get(roomId)));
  }

  rooms() {
    return this.tx(["rooms"], "readonly", (t) => idb(t.objectStore("rooms").getAll()));
  }

  putRoom(room) {
    return this.tx(["rooms"], "readwrite", (t) => idb(t.objectStore("rooms").put(room)));
  }

  async updateRoom(roomId, fn) {
    return this.tx(["rooms"], "readwrite", async (t) => {
      const store = t.objectStore("rooms");
      const room = (await idb(store.get(roomId))) || {
        room_id: roomId,
        name: "",
        is_direct: undefined,
        members: [],
        admins: [],
        unread: 0,
        last_ts: 0,
        left: false,
      };
      fn(room);
      await idb(store.put(room));
      return room;
    });
  }

  event(eventId) {
    return this.tx(["events"], "readonly", (t) => idb(t.objectStore("events").get(eventId)));
  }

  /** Store an event record; `content` (plaintext) is sealed first. */
  async putEvent(record, content) {
    const sealed = content === undefined ? record.sealed : await this.seal(content);
    const stored = { ...record, sealed };
    delete stored.content;
    await this.tx(["events"], "readwrite", (t) => idb(t.objectStore("events").put(stored)));
    return stored;
  }

  async updateEvent(eventId, fn) {
    return this.tx(["events"], "readwrite", async (t) => {
      const store = t.objectStore("events");
      const record = await idb(store.get(eventId));
      if (!record) return null;
      fn(record);
      await idb(store.put(record));
      return record;
    });
  }

  deleteEvent(eventId) {
    return this.tx(["events"], "readwrite", (t) => idb(t.objectStore("events").delete(eventId)));
  }

  /** The room's events, oldest first, content unsealed. */
  async timeline(roomId) {
    const range = IDBKeyRange.bound([roomId, 0], [roomId, Number.MAX_SAFE_INTEGER]);
    const records = await this.tx(["events"], "readonly", (t) =>
      idb(t.objectStore("events").index("room_ts").getAll(range)),
    );
    return Promise.all(records.map(async (r) => ({ ...r, content: await this.unseal(r.sealed) })));
  }

  /** Events that could not be decrypted yet (kept as the ciphertext the server sent). */
  async undecrypted() {
    const all = await this.tx(["events"], "readonly", (t) => idb(t.objectStore("events").getAll()));
    return all.filter((r) => r.kind === "utd");
  }
}
