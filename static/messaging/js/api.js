// The CallsApp HTTP API (docs/protocols/callsapp.md): Matrix client-server paths and shapes,
// authenticated by the session cookie and the CSRF header.
export const CLIENT = "/messaging/_matrix/client/v3/";
export const MEDIA = "/messaging/_matrix/media/v3/";

export class ApiError extends Error {
  constructor(status, errcode, message, body = {}) {
    super(message || errcode || `HTTP ${status}`);
    this.status = status;
    this.errcode = errcode;
    this.body = body;
  }
}

function csrfToken() {
  const cookie = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
  if (cookie) return decodeURIComponent(cookie.slice("csrftoken=".length));
  return document.querySelector("meta[name=csrf-token]")?.content || "";
}

/**
 * One request. `path` is relative to the client prefix unless it starts with "/". `body` is
 * JSON (an object or an already-serialised string) or raw bytes (Uint8Array/Blob). Answers
 * the parsed JSON, or the text with `{ text: true }`, or bytes with `{ bytes: true }`.
 */
export async function api(method, path, body, { text = false, bytes = false } = {}) {
  const url = path.startsWith("/") ? path : CLIENT + path;
  const headers = {};
  let payload;
  if (body instanceof Uint8Array || body instanceof Blob) {
    headers["Content-Type"] = "application/octet-stream";
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = typeof body === "string" ? body : JSON.stringify(body);
  }
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  const response = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
  if (!response.ok) {
    let err = {};
    try {
      err = await response.json();
    } catch {
      /* not JSON: keep the status */
    }
    throw new ApiError(response.status, err.errcode, err.error, err);
  }
  if (bytes) return new Uint8Array(await response.arrayBuffer());
  return text ? response.text() : response.json();
}

export const enc = encodeURIComponent;
