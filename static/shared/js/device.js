// The browser's device id: generated once, kept in localStorage, sent with sockets and
// registered with the account so the user can see (and recognise) their devices.
const KEY = "cp.device_id";

export function deviceId() {
  let id = localStorage.getItem(KEY);
  if (!id) {
    id = crypto.randomUUID();
    localStorage.setItem(KEY, id);
  }
  return id;
}

export function describeDevice() {
  const ua = navigator.userAgent;
  const uaData = navigator.userAgentData;
  const platform = uaData?.platform || (/Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS"
    : /Mac/.test(ua) ? "macOS" : /Win/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "Unknown");
  // Skip the GREASE entry ("Not:A-Brand"); prefer the product brand over "Chromium".
  const brands = (uaData?.brands || []).filter((b) => !/Not.?A.?Brand/i.test(b.brand));
  const brand = brands.find((b) => b.brand !== "Chromium") || brands[0];
  const browser = brand ? `${brand.brand} ${brand.version}`
    : (ua.match(/(Firefox|Edg|Chrome|Safari)\/([\d.]+)/) || []).slice(1, 3).join(" ");
  return { make: browser || "Browser", model: uaData?.mobile ? "mobile" : "desktop", platform,
    client_version: "web-1" };
}

export async function registerDevice() {
  const csrf = document.querySelector("meta[name=csrf-token]")?.content;
  const body = { device_id: deviceId(), ...describeDevice() };
  const response = await fetch("/devices/register/", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  if (!response.ok) throw new Error(`device registration failed: ${response.status}`);
  return response.json();
}
