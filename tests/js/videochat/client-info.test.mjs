// node --test tests/js/
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserName, collectClientInfo, osName } from "../../../static/videochat/js/client-info.js";
import { captureFrame, snapshotSize } from "../../../static/videochat/js/snapshot.js";
import { COUNTRY_CODES, countryOptions, flagEmoji, LANGUAGE_CODES } from "../../../static/videochat/js/options.js";

const CHROME_LINUX = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
const FIREFOX_WIN = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0";
const SAFARI_IOS = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1";

test("browser and OS from the user agent", () => {
  assert.equal(browserName(CHROME_LINUX), "Chrome 156");
  assert.equal(osName(CHROME_LINUX), "Linux");
  assert.equal(browserName(FIREFOX_WIN), "Firefox 140");
  assert.equal(osName(FIREFOX_WIN), "Windows");
  assert.equal(browserName(SAFARI_IOS), "Safari 18");
  assert.equal(osName(SAFARI_IOS), "iOS");
  assert.equal(browserName(""), "Unknown");
});

test("user-agent client hints win when present", () => {
  const uaData = { platform: "Android", brands: [{ brand: "Not=A?Brand", version: "24" },
    { brand: "Chromium", version: "156" }, { brand: "Google Chrome", version: "156" }] };
  assert.equal(browserName(CHROME_LINUX, uaData), "Google Chrome 156");
  assert.equal(osName(CHROME_LINUX, uaData), "Android");
});

test("collects counts of cameras and microphones, timezone and language; no labels or ids", async () => {
  const nav = {
    userAgent: CHROME_LINUX, language: "de-DE",
    mediaDevices: { enumerateDevices: async () => [
      { kind: "videoinput", label: "Front", deviceId: "a" }, { kind: "videoinput", label: "Back", deviceId: "b" },
      { kind: "audioinput", label: "Mic", deviceId: "c" }, { kind: "audiooutput", label: "Speaker", deviceId: "d" },
    ] },
  };
  const intl = { DateTimeFormat: () => ({ resolvedOptions: () => ({ timeZone: "Europe/Berlin" }) }) };
  assert.deepEqual(await collectClientInfo(nav, intl), {
    browser: "Chrome 156", os: "Linux", cameras: 2, microphones: 1, timezone: "Europe/Berlin", language: "de-DE",
  });
});

test("a browser without device enumeration reports zero devices", async () => {
  const info = await collectClientInfo({ userAgent: FIREFOX_WIN, language: "en",
    mediaDevices: { enumerateDevices: async () => { throw new Error("denied"); } } });
  assert.equal(info.cameras, 0);
  assert.equal(info.microphones, 0);
  assert.equal(typeof info.timezone, "string");
});

test("snapshot size keeps the aspect ratio and caps the width", () => {
  assert.deepEqual(snapshotSize(640, 480), { width: 640, height: 480 });
  assert.deepEqual(snapshotSize(1920, 1080, 960), { width: 960, height: 540 });
  assert.equal(snapshotSize(0, 0), null);
});

test("captureFrame draws the video into a canvas and encodes a JPEG", async () => {
  const drawn = [];
  const canvas = {
    getContext: () => ({ drawImage: (...args) => drawn.push(args) }),
    convertToBlob: async (opts) => ({ blob: true, ...opts }),
  };
  const video = { videoWidth: 1280, videoHeight: 720 };
  const blob = await captureFrame(video, { maxWidth: 640, makeCanvas: (w, h) => { canvas.size = [w, h]; return canvas; } });
  assert.deepEqual(canvas.size, [640, 360]);
  assert.deepEqual(drawn, [[video, 0, 0, 640, 360]]);
  assert.deepEqual(blob, { blob: true, type: "image/jpeg", quality: 0.85 });
});

test("captureFrame gives null before the video has a frame", async () => {
  assert.equal(await captureFrame({ videoWidth: 0, videoHeight: 0 }), null);
});

test("country and language choices", () => {
  assert.equal(COUNTRY_CODES.length, 249);
  assert.ok(COUNTRY_CODES.every((c) => /^[A-Z]{2}$/.test(c)));
  assert.ok(LANGUAGE_CODES.includes("en") && LANGUAGE_CODES.includes("de"));
  assert.equal(flagEmoji("de"), "🇩🇪");
  assert.equal(flagEmoji(""), "");
  const opts = countryOptions("en");
  assert.equal(opts.find((o) => o.code === "DE").name, "Germany");
});
