// This browser's device: the server issues it at login and binds it to the session (nothing
// here names it). The page only tells the server what the browser can say about itself,
// which is more than the User-Agent header: the devices page and CBLINE's connection log show it.
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

export async function describeThisDevice() {
  const csrf = document.querySelector("meta[name=csrf-token]")?.content;
  const response = await fetch("/devices/current/", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
    body: JSON.stringify(describeDevice()),
    credentials: "same-origin",
  });
  if (!response.ok) throw new Error(`device description failed: ${response.status}`);
  return response.json();
}
