// What the policy calls "Client Data — Browser", as the `hello` message carries it: browser,
// operating system, how many cameras and microphones, timezone and language. Computed fresh
// for each hello and kept nowhere in the browser. Device labels and ids are never read.

const BROWSERS = [
  [/Edg\/([\d]+)/, "Edge"],
  [/OPR\/([\d]+)/, "Opera"],
  [/YaBrowser\/([\d]+)/, "Yandex"],
  [/SamsungBrowser\/([\d]+)/, "Samsung Internet"],
  [/Firefox\/([\d]+)/, "Firefox"],
  [/Chrom(?:e|ium)\/([\d]+)/, "Chrome"],
  [/Version\/([\d]+)[\d.]* .*Safari\//, "Safari"],
];

export function browserName(ua = "", uaData = null) {
  const brand = uaData?.brands?.find((b) => !/Not.?A.?Brand/i.test(b.brand) && b.brand !== "Chromium")
    || uaData?.brands?.find((b) => !/Not.?A.?Brand/i.test(b.brand));
  if (brand) return `${brand.brand} ${brand.version}`;
  for (const [re, name] of BROWSERS) {
    const m = ua.match(re);
    if (m) return `${name} ${m[1]}`;
  }
  return "Unknown";
}

export function osName(ua = "", uaData = null) {
  if (uaData?.platform) return uaData.platform;
  if (/Android/.test(ua)) return "Android";
  if (/iPhone|iPad|iPod/.test(ua)) return "iOS";
  if (/Mac OS X|Macintosh/.test(ua)) return "macOS";
  if (/Windows/.test(ua)) return "Windows";
  if (/CrOS/.test(ua)) return "ChromeOS";
  if (/Linux/.test(ua)) return "Linux";
  return "Unknown";
}

export async function countDevices(mediaDevices) {
  try {
    const devices = (await mediaDevices?.enumerateDevices?.()) ?? [];
    return {
      cameras: devices.filter((d) => d.kind === "videoinput").length,
      microphones: devices.filter((d) => d.kind === "audioinput").length,
    };
  } catch {
    return { cameras: 0, microphones: 0 };
  }
}

export async function collectClientInfo(nav = globalThis.navigator, intl = globalThis.Intl) {
  const ua = nav?.userAgent ?? "";
  const uaData = nav?.userAgentData ?? null;
  const { cameras, microphones } = await countDevices(nav?.mediaDevices);
  let timezone = "";
  try { timezone = intl.DateTimeFormat().resolvedOptions().timeZone ?? ""; } catch { /* none */ }
  return {
    browser: browserName(ua, uaData).slice(0, 64),
    os: osName(ua, uaData).slice(0, 64),
    cameras,
    microphones,
    timezone: timezone.slice(0, 64),
    language: (nav?.language ?? "").slice(0, 16),
  };
}
