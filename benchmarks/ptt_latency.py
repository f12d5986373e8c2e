"""CBLINE push-to-talk latency in real Chromium pages: from the moment a sound is captured at
the talker's microphone to the moment it comes out of the listener's playback path.

Two pages (two users, two browser contexts, one Chromium) join one CBLINE channel on a live
uvicorn process, the production server (`--server daphne` for the other; throwaway SQLite
file and Redis key prefix, see benchmarks/_common.py). The talker holds the floor for
`--seconds` per round, `--rounds` times. Chromium's fake microphone plays a click track
written here with the `wave` module: 20 ms bursts whose gaps (300 to 700 ms in 25 ms steps)
never repeat in the same order, so each heard click is paired with the click that caused it
by the gaps around it, not by nearness to a guessed delay (periodic beeps alias by one
period). Both ends stamp on the same clock, `performance.timeOrigin + performance.now()`:

- the talker, each beep's onset in the captured samples (static/voice/js/media/capture.js,
  sample index mapped to page time);
- the listener, the onset of the same beep in the audio leaving its jitter buffer
  (static/voice/js/media/jitter-worklet.js; AudioWorklet context time mapped to page time
  with AudioContext.getOutputTimestamp(), so the output device latency is included).

talk-to-hear = listener onset - talker onset, per click; clicks heard that no gap pattern
pairs are reported as unmatched, never guessed.
press-to-first-audio = press (floor.request sent; the microphone is already open) to the
listener's first played sample of that transmission.

The pages speak docs/protocols/cbline.md themselves with the media modules, so the number
is the media path plus the server, not any particular page's UI. `--local` measures the
same pipeline inside one page without a server (encoder + jitter buffer + output).

    .venv/bin/python benchmarks/ptt_latency.py                   # 3 rounds x 10 s
    .venv/bin/python benchmarks/ptt_latency.py --local --seconds 10
    .venv/bin/python benchmarks/ptt_latency.py --mode mediarecorder --rounds 1
    .venv/bin/python benchmarks/ptt_latency.py --netem            # impaired network (root)

`--netem` puts the server in a network namespace of its own, reached over a link that
delays every packet 30 ms +- 15 ms and drops 2 % in each direction (`tc qdisc ... netem`;
on a kernel without netem, a TUN relay applying the same model: benchmarks/_netem.py), and
removes it all at the end, error or not.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import random
import struct
import sys
import wave
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    VAR,
    BenchEnv,
    bench_env,
    cleanup,
    migrate,
    percentile,
    sessions_with_devices,
    start_server,
    stop_server,
    table,
)
from benchmarks._netem import Impairment, impaired, preflight

MEDIA = "/static/voice/js/media"
TARGET_P95_MS = 80.0  # loopback (issue 16's next bar; it was 150)
TARGET_NETEM_P95_MS = 200.0  # --netem
MIN_LATENCY_MS = 30.0  # nothing is heard before its packet is complete and sent
GAP_TOLERANCE_MS = 10.0  # the track's gaps differ by 25 ms
WEAK_SPREAD_MS = 100.0  # a one-side pairing this close to its nearest two-side one
MAX_LATENCY_MS = 3000.0
# Every gap once, in an order no pair of neighbours repeats within one pass of the track.
CLICK_GAPS_MS = [300 + 25 * k for k in range(17)]
random.Random(16).shuffle(CLICK_GAPS_MS)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]

# Installed in each page as window.B: the media modules plus a minimal CBLINE socket client.
DRIVER = """
async ([M, deviceId]) => {
  const protocol = await import(`${M}/protocol.js`);
  const { Capture } = await import(`${M}/capture.js`);
  const { Player } = await import(`${M}/player.js`);
  const now = () => performance.timeOrigin + performance.now();
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const B = { protocol, Capture, Player, now, sleep, log: [], errors: [], waiting: new Map(),
              talkerOnsets: [], presses: [], sent: [] };
  B.expect = (type, ms = 5000) => new Promise((resolve, reject) => {
    B.waiting.set(type, resolve);
    setTimeout(() => reject(new Error(`no ${type} within ${ms} ms`)), ms);
  });
  B.connect = () => new Promise((resolve, reject) => {
    const url = `ws://${location.host}/ws/cbline/?device=${deviceId}`;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error("socket failed"));
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") { B.onBinary?.(e.data); return; }
      const msg = JSON.parse(e.data);
      if (msg.type === "error") B.errors.push(msg);
      const w = B.waiting.get(msg.type);
      if (w) { B.waiting.delete(msg.type); w(msg); }
      B.onMessage?.(msg);
    };
    B.ws = ws;
  });
  B.send = (msg) => B.ws.send(JSON.stringify(msg));
  B.join = async (channelId) => {
    const joined = B.expect("channel.joined");
    B.send({ type: "channel.join", channel_id: channelId, password: null });
    return joined;
  };
  B.listen = async () => {
    B.player = new Player();
    await B.player.init();
    await B.player.resume();
    B.ages = [];
    B.onBinary = (buf) => {
      const p = protocol.unpackPacket(buf);
      B.ages.push(now() - p.captureTs); // packetisation + capture + server + socket
      B.player.push(p);
    };
    B.onMessage = (msg) => {
      if (msg.type === "floor.released") B.player.endTransmission(msg.tx_id);
    };
  };
  B.openMic = async () => {
    B.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    await Capture.warmUp();
  };
  B.talk = async (ms, mode) => {
    const press = now();
    const granted = B.expect("floor.granted");
    B.send({ type: "floor.request", mode });
    const g = await granted;
    const grantedAt = now();
    let seq = 0;
    let firstSent = null;
    const cap = new Capture({
      packetMs: g.packet_ms, mode,
      onOnset: () => {},
      onPacket: (kind, data, captureTs, last) => {
        B.ws.send(protocol.packPacket({
          kind, last, seq: seq++, txId: g.tx_id, captureTs,
          frames: kind === 1 ? data : undefined, chunk: kind === 2 ? data : undefined,
        }));
        if (firstSent === null) firstSent = now();
      },
    });
    await cap.start(B.stream);
    const started = now();
    await sleep(ms);
    await cap.stop();
    B.talkerOnsets.push(...cap.onsetTimes());
    B.send({ type: "floor.release", tx_id: g.tx_id });
    B.presses.push({ txId: g.tx_id, press, grantedAt, started, firstSent, packets: seq,
                     source: cap.stats.source });
    return g.tx_id;
  };
  /** No server: capture -> pack -> unpack -> Player in this page. */
  B.local = async (ms, mode) => {
    await B.listen();
    let seq = 0;
    const press = now();
    const cap = new Capture({
      mode, onOnset: () => {},
      onPacket: (kind, data, captureTs, last) => {
        const buf = protocol.packPacket({
          kind, last, seq: seq++, txId: 1, captureTs,
          frames: kind === 1 ? data : undefined, chunk: kind === 2 ? data : undefined,
        });
        B.player.push(protocol.unpackPacket(buf));
      },
    });
    await cap.start(B.stream);
    await sleep(ms);
    await cap.stop();
    B.talkerOnsets.push(...cap.onsetTimes());
    B.presses.push({ txId: 1, press, grantedAt: press, started: press, firstSent: null,
                     packets: seq, source: cap.stats.source });
  };
  window.B = B;
  return true;
}
"""


def write_click_track(path: Path, seconds: float = 60.0, rate: int = 48000) -> Path:
    """20 ms 1 kHz bursts, the gaps between onsets cycling through CLICK_GAPS_MS; 16-bit
    mono. Chromium loops the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = bytearray()
    burst = int(0.020 * rate)
    total = int(seconds * rate)
    gaps = itertools.cycle(CLICK_GAPS_MS)
    while len(frames) < 2 * total:
        gap = int(next(gaps) * rate / 1000)
        for k in range(gap):
            v = 0.8 * math.sin(2 * math.pi * 1000 * k / rate) if k < burst else 0.0
            frames += struct.pack("<h", int(v * 32767))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return path


def make_people(bench: BenchEnv) -> tuple[list[str], int]:
    """Two users with sessions and one public channel, straight into the benchmark DB."""
    bench.apply()
    import django

    django.setup()
    from accounts.models import Profile, User
    from voice import services

    tag = bench.run_id
    users = []
    for name in ("talker", "listener"):
        u = User.objects.create_user(email=f"{name}-{tag}@example.com", password=None)
        Profile.objects.update_or_create(user=u, defaults={"nickname": f"{name}{tag[:4]}"})
        users.append(u)
    channel = services.channel_create(creator=users[0], name=f"latency-{tag}")
    cookies = sessions_with_devices(users)
    return cookies, channel.pk


def open_page(browser: Any, base_url: str, cookie: str | None, device: str) -> Any:
    ctx = browser.new_context()
    if cookie:
        ctx.add_cookies([{"name": "sessionid", "value": cookie, "url": base_url}])
    page = ctx.new_page()
    page.goto(f"{base_url}{MEDIA}/protocol.js")
    page.set_content("<!doctype html><title>CBLINE latency</title>")
    page.evaluate(DRIVER, [MEDIA, device])
    return page


def clock_skew_ms(a: Any, b: Any) -> float:
    """How far page b's clock is from page a's (should be ~0: one machine, one clock)."""
    samples = []
    for _ in range(5):
        t1 = a.evaluate("performance.timeOrigin + performance.now()")
        t2 = b.evaluate("performance.timeOrigin + performance.now()")
        t3 = a.evaluate("performance.timeOrigin + performance.now()")
        samples.append((t3 - t1, t2 - (t1 + t3) / 2))
    return min(samples)[1]


def _signatures(onsets: list[float]) -> list[dict[str, tuple[float, float]]]:
    """For each onset, the gap pairs that identify it, by side: the two gaps before it, the
    gaps either side of it, the two gaps after it (whichever exist)."""
    out = []
    n = len(onsets)
    for j in range(n):
        sig = {}
        if j >= 2:
            sig["before"] = (onsets[j - 1] - onsets[j - 2], onsets[j] - onsets[j - 1])
        if 1 <= j < n - 1:
            sig["around"] = (onsets[j] - onsets[j - 1], onsets[j + 1] - onsets[j])
        if j < n - 2:
            sig["after"] = (onsets[j + 1] - onsets[j], onsets[j + 2] - onsets[j + 1])
        out.append(sig)
    return out


def _agreement(a: dict[str, tuple[float, float]], b: dict[str, tuple[float, float]]) -> str:
    """ "strong" when two sides agree (or the only side both have), "weak" for one side of
    several, "" for none. One side alone can alias: a buffer that grows twice in a row
    stretches two gaps by 25-35 ms, and where the track has gaps 25 ms apart (550, 525, 500)
    the stretched pair looks like its neighbour's (a 200 ms click was reported as 690 ms)."""
    common = a.keys() & b.keys()
    agree = sum(
        abs(a[side][0] - b[side][0]) <= GAP_TOLERANCE_MS
        and abs(a[side][1] - b[side][1]) <= GAP_TOLERANCE_MS
        for side in common
    )
    if agree and agree >= min(2, len(common)):
        return "strong"
    return "weak" if agree else ""


def match_onsets(talker: list[float], heard: list[float]) -> tuple[list[float], int]:
    """Pair each heard click with the click that caused it by the gaps around both: returns
    (latencies, heard clicks left unpaired).

    A heard click is paired only if exactly one sent click, MIN_LATENCY_MS to MAX_LATENCY_MS
    earlier, has its gaps. Strong pairings (two sides agree) come first; a weak one (one
    side) counts only if its latency is within WEAK_SPREAD_MS of the strong pairing nearest
    in time, so a stretched gap is never read as the neighbouring click. A jitter buffer that
    stretched or cut gaps leaves clicks unpaired rather than guessed.
    """
    sent = sorted(talker)
    got = sorted(heard)
    sent_sigs = _signatures(sent)
    found: list[tuple[str, int] | None] = []
    lo = 0
    for h, sig in zip(got, _signatures(got), strict=True):
        while lo < len(sent) and sent[lo] < h - MAX_LATENCY_MS:
            lo += 1
        hits: dict[str, list[int]] = {"strong": [], "weak": []}
        for i in range(lo, len(sent)):
            if sent[i] > h - MIN_LATENCY_MS:
                break
            kind = _agreement(sig, sent_sigs[i])
            if kind:
                hits[kind].append(i)
        if hits["strong"]:
            found.append(("strong", hits["strong"][0]) if len(hits["strong"]) == 1 else None)
        else:
            found.append(("weak", hits["weak"][0]) if len(hits["weak"]) == 1 else None)
    anchors = [
        (h, h - sent[f[1]]) for h, f in zip(got, found, strict=True) if f and f[0] == "strong"
    ]
    latencies: list[float] = []
    unmatched = 0
    used: set[int] = set()
    for h, f in zip(got, found, strict=True):
        if f is None or f[1] in used:
            unmatched += 1
            continue
        latency = h - sent[f[1]]
        if f[0] == "weak":
            near = min(anchors, key=lambda a: abs(a[0] - h), default=None)
            if near is None or abs(near[1] - latency) > WEAK_SPREAD_MS:
                unmatched += 1
                continue
        used.add(f[1])
        latencies.append(latency)
    return latencies, unmatched


def summarize(lat: list[float]) -> list[object]:
    s = sorted(lat)
    if not s:
        return [0, "-", "-", "-", "-", "-"]
    return [
        len(s),
        percentile(s, 0),
        percentile(s, 50),
        percentile(s, 95),
        percentile(s, 99),
        s[-1],
    ]


def run_local(browser: Any, base_url: str, seconds: float, mode: str) -> dict[str, Any]:
    page = open_page(browser, base_url, None, "bench-local")
    page.evaluate("B.openMic()")
    page.evaluate(f"B.local({int(seconds * 1000)}, {json.dumps(mode)})")
    page.wait_for_timeout(800)
    out = page.evaluate(
        "async () => ({talker: B.talkerOnsets, heard: B.player.onsets.map((o) => o.ts),"
        " starts: B.player.starts, presses: B.presses, stats: await B.player.getStats()})"
    )
    page.context.close()
    return out


# The listener's output path, apart from the jitter buffer: the AudioContext's own figures
# and the gap between the context's clock and what getOutputTimestamp() says is being heard.
OUTPUT_PROBE = """(() => {
  const c = B.player.ctx;
  const o = c.getOutputTimestamp();
  return { hint: B.player.latencyHint ?? "interactive", sampleRate: c.sampleRate,
           baseMs: c.baseLatency * 1000, outputMs: (c.outputLatency || 0) * 1000,
           pipelineMs: (c.currentTime - o.contextTime) * 1000 };
})()"""


def run_channel(
    browser: Any,
    base_url: str,
    cookies: list[str],
    channel_id: int,
    seconds: float,
    rounds: int,
    mode: str,
) -> dict[str, Any]:
    talker = open_page(browser, base_url, cookies[0], "bench-talker")
    listener = open_page(browser, base_url, cookies[1], "bench-listener")
    for page in (talker, listener):
        page.evaluate("B.connect()")
        page.evaluate(f"B.join({channel_id})")
    listener.evaluate("B.listen()")
    talker.evaluate("B.openMic()")
    skew = clock_skew_ms(talker, listener)
    for _ in range(rounds):
        talker.evaluate(f"B.talk({int(seconds * 1000)}, {json.dumps(mode)})")
        listener.wait_for_timeout(1200)  # play out, then the next press
    t = talker.evaluate("({talker: B.talkerOnsets, presses: B.presses, errors: B.errors})")
    h = listener.evaluate(
        "async () => ({heard: B.player.onsets.map((o) => o.ts), starts: B.player.starts,"
        " stats: await B.player.getStats(), errors: B.errors, ages: B.ages,"
        f" output: {OUTPUT_PROBE}}})"
    )
    talker.context.close()
    listener.context.close()
    return {**t, **h, "errors": t["errors"] + h["errors"], "skew": skew}


# For --via page: the CBLINE page (static/voice/js/app.js) is measured as it is, by wrapping
# two browser APIs before it loads. The talker's onsets are found in the very samples the
# page hands to its Opus encoder; the listener's come from its jitter worklet's tap.
PAGE_PROBE = """(() => {
  const now = () => performance.timeOrigin + performance.now();
  const T = (window.__latency = { onsets: [], heard: [], starts: [] });
  // Onsets are kept as sample indices and stamped with the encoder's final (best) anchor.
  T.talker = () => T.onsets.flatMap(({ s, i, rate }) => s.anchor + (i * 1000) / rate);
  const encoders = new WeakMap();
  const encode = AudioEncoder.prototype.encode;
  AudioEncoder.prototype.encode = function (data) {
    try {
      let s = encoders.get(this);
      if (!s) encoders.set(this, (s = { anchor: Infinity, quiet: Infinity }));
      const rate = data.sampleRate;
      const n = data.numberOfFrames;
      const start = Math.round((data.timestamp * rate) / 1e6);
      // Not while releasing: the page pads its last frame with silence, all at once.
      if (!T.frozen) s.anchor = Math.min(s.anchor, now() - ((start + n) * 1000) / rate);
      const buf = new Float32Array(n);
      data.copyTo(buf, { planeIndex: 0, format: "f32-planar" });
      for (let i = 0; i < n; i++) {
        if (Math.abs(buf[i]) >= 0.1) {
          if (s.quiet >= 0.08 * rate) T.onsets.push({ s, i: start + i, rate });
          s.quiet = 0;
        } else s.quiet++;
      }
    } catch (e) { /* measuring must never break the page */ }
    return encode.call(this, data);
  };
  const Base = window.AudioWorkletNode;
  window.AudioWorkletNode = class extends Base {
    constructor(ctx, name, options) {
      super(ctx, name, options);
      if (name !== "cbline-jitter") return;
      const toPage = (t) => {
        const o = ctx.getOutputTimestamp();
        return performance.timeOrigin + o.performanceTime + (t - o.contextTime) * 1000;
      };
      this.port.addEventListener("message", (e) => {
        const at = e.data.contextTime;
        if (e.data.type === "onset") T.heard.push(toPage(at));
        if (e.data.type === "started") T.starts.push({ key: e.data.key, ts: toPage(at) });
      });
    }
  };
})()"""


def open_cbline_page(browser: Any, base_url: str, cookie: str, channel_id: int) -> Any:
    ctx = browser.new_context(permissions=["microphone"])
    ctx.add_cookies([{"name": "sessionid", "value": cookie, "url": base_url}])
    ctx.add_init_script(PAGE_PROBE)
    page = ctx.new_page()
    page.goto(f"{base_url}/cbline/")
    page.wait_for_function("() => window.cbline && window.cbline.state.open", polling=100)
    page.get_by_test_id(f"cb-channel-{channel_id}").click()
    page.wait_for_function(f"() => window.cbline.state.channelId === {channel_id}", polling=100)
    return page


def run_page(
    browser: Any, base_url: str, cookies: list[str], channel_id: int, seconds: float, rounds: int
) -> dict[str, Any]:
    talker = open_cbline_page(browser, base_url, cookies[0], channel_id)
    listener = open_cbline_page(browser, base_url, cookies[1], channel_id)
    skew = clock_skew_ms(talker, listener)
    presses = []
    for _ in range(rounds):
        press = talker.evaluate(
            "() => { const t = performance.timeOrigin + performance.now();"
            " window.__latency.frozen = false; window.cbline.press(); return t; }"
        )
        talker.wait_for_timeout(seconds * 1000)
        talker.evaluate("() => { window.__latency.frozen = true; return window.cbline.release(); }")
        listener.wait_for_timeout(1200)
        presses.append(press)
    t = talker.evaluate("() => ({talker: window.__latency.talker()})")
    h = listener.evaluate(
        "async () => ({heard: window.__latency.heard, starts: window.__latency.starts,"
        " stats: await window.cbline.playbackStats()})"
    )
    talker.context.close()
    listener.context.close()
    # The first playback start after each press is that press's transmission.
    starts = sorted(h["starts"], key=lambda s: s["ts"])
    rows = []
    for press in presses:
        first = next((s for s in starts if s["ts"] > press), None)
        tx = int(first["key"].split(":")[1]) if first else -1
        rows.append({"txId": tx, "press": press, "source": "page", "packets": "-"})
    return {
        "talker": t["talker"],
        "heard": h["heard"],
        "starts": [{"txId": r["txId"], "ts": s["ts"]} for r, s in zip(rows, starts, strict=False)],
        "presses": rows,
        "stats": h["stats"],
        "errors": [],
        "skew": skew,
    }


def report(title: str, out: dict[str, Any], seconds: float) -> tuple[str, float]:
    lat, unmatched = match_onsets(out["talker"], out["heard"])
    starts = {s["txId"]: s["ts"] for s in out["starts"]}
    press_rows = []
    for p in out["presses"]:
        first = starts.get(p["txId"])

        def since_press(key: str, p: dict[str, Any] = p) -> object:
            return p[key] - p["press"] if p.get(key) else "-"

        press_rows.append(
            [
                p["txId"],
                p["source"],
                since_press("grantedAt"),
                since_press("started"),
                since_press("firstSent"),
                (first - p["press"]) if first else "-",
                p["packets"],
            ]
        )
    st = out["stats"]
    lines = [
        table(
            f"{title}: talk-to-hear per click (ms), {len(out['presses'])} x {seconds:g} s",
            ["clicks sent", "heard unmatched", "matched", "min", "p50", "p95", "p99", "max"],
            [[len(out["talker"]), unmatched, *summarize(lat)]],
        ),
        table(
            f"{title}: press-to-first-audio (ms after floor.request / press)",
            ["tx", "source", "granted", "capturing", "1st packet sent", "1st audio out", "packets"],
            press_rows,
        ),
        table(
            f"{title}: listener's jitter buffer",
            [
                "decoded frames",
                "underruns",
                "late frames",
                "concealed ms",
                "trimmed ms",
                "target ms (end)",
                "margin grew / shrank",
                "lost packets",
                "WebM chunks",
            ],
            [
                [
                    st.get("decodedFrames", 0),
                    st.get("underruns", 0),
                    st.get("lateFrames", 0),
                    st.get("concealedSamples", 0) / 48,
                    st.get("skippedSamples", 0) / 48,
                    st.get("targetMs", 0),
                    f"{st.get('grows', '-')} / {st.get('shrinks', '-')}",
                    st.get("lostPackets", 0),
                    st.get("mediaChunks", 0),
                ]
            ],
        ),
    ]
    played = st.get("playedSamples", 0)
    lines.append(
        table(
            f"{title}: loss concealment at the listener",
            ["lost packets", "concealed ms", "late, dropped ms", "played ms", "concealed fraction"],
            [
                [
                    st.get("lostPackets", 0),
                    st.get("concealedSamples", 0) / 48,
                    st.get("lateDroppedSamples", 0) / 48,
                    played / 48,
                    f"{100 * st.get('concealedSamples', 0) / played:.2f} %" if played else "-",
                ]
            ],
        )
    )
    if out.get("output"):
        o = out["output"]
        lines.append(
            table(
                f"{title}: listener's output path (inside talk-to-hear)",
                ["latencyHint", "sample rate", "baseLatency", "outputLatency", "context -> heard"],
                [[o["hint"], o["sampleRate"], o["baseMs"], o["outputMs"], o["pipelineMs"]]],
            )
        )
    if out.get("ages"):
        ages = sorted(out["ages"])
        lines.append(
            table(
                f"{title}: packet age on arrival at the listener (ms since its first sample)",
                ["packets", "min", "p50", "p95", "p99", "max"],
                [summarize(ages)[:1] + summarize(ages)[1:6]],
            )
        )
    p95 = percentile(sorted(lat), 95) if lat else float("inf")
    return "\n\n".join(lines), p95


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="floor held per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mode", choices=["webcodecs", "mediarecorder"], default="webcodecs")
    ap.add_argument("--local", action="store_true", help="one page, no server")
    ap.add_argument(
        "--via",
        choices=["driver", "page"],
        default="driver",
        help="driver: the media modules on a bare socket client; page: the CBLINE page itself",
    )
    ap.add_argument("--server", choices=["daphne", "uvicorn"], default="uvicorn")
    ap.add_argument("--netem", action="store_true", help="server behind an impaired link (root)")
    ap.add_argument("--delay", type=float, default=30.0, help="--netem: ms each way")
    ap.add_argument("--jitter", type=float, default=15.0, help="--netem: +- ms")
    ap.add_argument("--loss", type=float, default=2.0, help="--netem: %% of packets each way")
    ap.add_argument("--dump", type=Path, help="also write the raw stamps and stats (JSON) here")
    args = ap.parse_args()
    if args.netem and (why := preflight()):
        sys.exit(f"--netem {why}")
    imp = Impairment(args.delay, args.jitter, args.loss)

    chromium = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
    wav = write_click_track(VAR / "ptt-click-track.wav")
    launch_args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"]

    bench = bench_env()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min) at the start")
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(impaired(imp, var=VAR)) if args.netem else None
        if net is not None:
            print(f"network: {imp}, each way, via {net.method} (namespace {net.name})")
        try:
            run(args, bench, launch_args, chromium, net)
        finally:
            cleanup(bench)
    # After the namespace is gone: the relay writes its figures as it stops.
    if net is not None and (rs := net.relay_stats):
        print(
            f"relay: {rs['packets']} IP packets, {rs['dropped']} dropped"
            f" ({100 * rs['dropped'] / max(1, rs['packets']):.2f} %), drawn delay p50"
            f" {rs['delay_ms_p50']:.1f} ms, sent late by {rs['late_ms_mean']:.2f} ms mean,"
            f" {rs['late_ms_max']:.1f} ms max (the relay's own scheduling)"
        )


def run(
    args: argparse.Namespace, bench: BenchEnv, launch_args: list[str], chromium: str, net: Any
) -> None:
    """Migrate, start the server (in the namespace with --netem), measure, print."""
    from playwright.sync_api import sync_playwright

    server = None
    try:
        migrate(bench)
        cookies, channel_id = make_people(bench)  # ORM before Playwright's event loop starts
        if net is None:
            server = start_server(args.server, bench.env)
        else:
            env = {**bench.env, "DJANGO_ALLOWED_HOSTS": f"{net.ns_ip},127.0.0.1,localhost"}
            server = start_server(args.server, env, host=net.ns_ip, wrap=net.prefix)
        base_url = f"http://{server.host}:{server.port}"
        if net is not None:
            # Microphone and AudioWorklet need a secure context; 127.0.0.1 is one, this is not.
            launch_args = [*launch_args, f"--unsafely-treat-insecure-origin-as-secure={base_url}"]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=launch_args, headless=True)
            if args.local:
                out = run_local(browser, base_url, args.seconds, args.mode)
                text, p95 = report(f"local pipeline, {args.mode}, no server", out, args.seconds)
                print(text)
            elif args.via == "page":
                out = run_page(browser, base_url, cookies, channel_id, args.seconds, args.rounds)
                text, p95 = report(f"two CBLINE pages via {args.server}", out, args.seconds)
                print(text)
                print(f"\nclock skew between the pages: {out['skew']:.2f} ms")
            else:
                out = run_channel(
                    browser, base_url, cookies, channel_id, args.seconds, args.rounds, args.mode
                )
                text, p95 = report(f"two pages via {args.server}, {args.mode}", out, args.seconds)
                print(text)
                print(
                    f"\nclock skew between the pages: {out['skew']:.2f} ms; "
                    f"socket errors: {out['errors'] or 'none'}"
                )
            browser.close()
        if args.dump:
            args.dump.write_text(json.dumps(out))
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"machine: {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min) at the end")
        target = TARGET_NETEM_P95_MS if net is not None else TARGET_P95_MS
        verdict = "meets" if p95 <= target else "MISSES"
        print(f"talk-to-hear p95 {p95:.1f} ms {verdict} the {target:.0f} ms target")
    finally:
        if server is not None:
            stop_server(server)


if __name__ == "__main__":
    main()
