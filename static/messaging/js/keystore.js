// Where this browser keeps a CallsApp device's secrets, and who may write them.
//
// The SDK's IndexedDB crypto store is encrypted with a passphrase. The passphrase is random and
// is kept only encrypted, by a non-extractable AES-GCM key that lives in IndexedDB beside it
// (as Element Web keeps its "pickle key"): script on the page can use the key but never read
// it out, and a copy of the database files alone does not open the store.
//
// One writer per device: every tab of one device takes the same Web Lock before it opens the
// store, so two tabs never advance the ratchets from the same state (a fork that loses
// messages). A second tab waits until the first one closes.

const DB_NAME = "callsapp-keystore";
const STORE = "passphrases";

function idb(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function openDb() {
  const request = indexedDB.open(DB_NAME, 1);
  request.onupgradeneeded = () => request.result.createObjectStore(STORE);
  return idb(request);
}

async function withStore(mode, fn) {
  const db = await openDb();
  try {
    const tx = db.transaction(STORE, mode);
    const result = await fn(tx.objectStore(STORE));
    await new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
    return result;
  } finally {
    db.close();
  }
}

const recordKey = (userId, deviceId) => `${userId}|${deviceId}`;
// The encrypted passphrase is bound to its (user, device): a record moved to another slot
// fails to decrypt instead of opening the wrong store.
const aad = (userId, deviceId) => new TextEncoder().encode(recordKey(userId, deviceId));

const toBase64 = (bytes) => btoa(String.fromCharCode(...bytes));

/** The name of the SDK's IndexedDB store for this (user, device). */
export function cryptoStoreName(userId, deviceId) {
  return `callsapp:${userId}:${deviceId}`;
}

/** The name of this device's local conversation history (sealed records). */
export function historyStoreName(userId, deviceId) {
  return `callsapp-history:${userId}:${deviceId}`;
}

/** Whether this browser holds the secrets of (user, device). False after storage eviction. */
export async function hasDeviceSecrets(userId, deviceId) {
  const record = await withStore("readonly", (s) => idb(s.get(recordKey(userId, deviceId))));
  return Boolean(record);
}

/**
 * The store passphrase of (user, device), made on first use: 32 random bytes, base64. Kept
 * only as AES-GCM ciphertext under a non-extractable key stored in the same record.
 */
export async function storePassphrase(userId, deviceId) {
  const key = recordKey(userId, deviceId);
  const existing = await withStore("readonly", (s) => idb(s.get(key)));
  if (existing) {
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: existing.iv, additionalData: aad(userId, deviceId) },
      existing.cryptoKey,
      existing.encrypted,
    );
    return new TextDecoder().decode(plain);
  }
  const cryptoKey = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, [
    "encrypt",
    "decrypt",
  ]);
  const passphrase = toBase64(crypto.getRandomValues(new Uint8Array(32)));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const encrypted = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: aad(userId, deviceId) },
    cryptoKey,
    new TextEncoder().encode(passphrase),
  );
  // `add`, not `put`: if another writer got here first, this fails instead of replacing the
  // passphrase of a store that is already encrypted with the other one.
  await withStore("readwrite", (s) => idb(s.add({ cryptoKey, iv, encrypted }, key)));
  return passphrase;
}

/**
 * The device's non-extractable AES-GCM key, to seal what this browser keeps of the
 * conversations (the server deletes a message once delivered, so this copy is the only one).
 */
export async function deviceSealingKey(userId, deviceId) {
  const record = await withStore("readonly", (s) => idb(s.get(recordKey(userId, deviceId))));
  if (!record) throw new Error("no secrets for this device");
  return record.cryptoKey;
}

/** Forget (user, device): its passphrase and its SDK store (on logout or device removal). */
export async function forgetDevice(userId, deviceId) {
  await withStore("readwrite", (s) => idb(s.delete(recordKey(userId, deviceId))));
  const names = [cryptoStoreName(userId, deviceId), historyStoreName(userId, deviceId)];
  for (const db of await indexedDB.databases()) {
    if (names.some((n) => db.name?.startsWith(n))) await idb(indexedDB.deleteDatabase(db.name));
  }
}

/** The Web Lock name that makes one tab the only writer of a device's store. */
export function deviceLockName(userId, deviceId) {
  return `callsapp-device:${userId}:${deviceId}`;
}

/**
 * Take the device's lock and hold it until `release()` (or until the tab goes away). Resolves
 * with `release` once this tab is the writer; `onWait` is called first if another tab holds
 * the lock, and this tab then waits its turn.
 */
export function acquireDeviceLock(userId, deviceId, { onWait } = {}) {
  const name = deviceLockName(userId, deviceId);
  return new Promise((resolve, reject) => {
    let release;
    const held = new Promise((r) => {
      release = r;
    });
    const hold = async (lock) => {
      if (!lock) return false;
      resolve(release);
      await held;
      return true;
    };
    navigator.locks
      .request(name, { ifAvailable: true }, hold)
      .then((got) => {
        if (got) return undefined;
        onWait?.();
        return navigator.locks.request(name, hold);
      })
      .catch(reject);
  });
}
