"""CBLINE browser media path in a real Chromium: the binary frame format, Opus capture from
the fake microphone, decoding and the jitter buffer up to the playback tap, loss concealment,
the MediaRecorder/MediaSource fallback, and that no audio is written to browser storage.

The modules are loaded from /static/ of a live daphne process into an otherwise empty page.
The fake microphone beeps (about 20 ms every 500 ms), which gives the onsets to follow."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

MEDIA = "/static/voice/js/media"

# Helpers installed on window.H in each page. Packets are recorded with the same packing
# the page controller uses, then fed to the Player at the cadence they were captured.
HARNESS = """
async () => {
  const M = "__MEDIA__";
  const protocol = await import(`${M}/protocol.js`);
  const { Capture } = await import(`${M}/capture.js`);
  const { Player } = await import(`${M}/player.js`);
  const { ReplayStore } = await import(`${M}/replay-store.js`);
  // Only to pace input (a live capture of `ms`, packets at the cadence they were made) and
  // as the far side of a race that bounds a wait: waits on outcomes use waitFor.
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const mic = () => navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  async function record(ms, opts = {}) {
    const stream = await mic();
    const packets = [];
    const onsets = [];
    let seq = 0;
    const cap = new Capture({
      ...opts,
      onOnset: (ts) => onsets.push(ts),
      onPacket: (kind, data, captureTs, last) => {
        const buf = protocol.packPacket({
          kind, last, seq: seq++, txId: opts.txId ?? 42, captureTs,
          frames: kind === 1 ? data : undefined, chunk: kind === 2 ? data : undefined,
        });
        packets.push({ buf, at: performance.now() });
      },
    });
    await cap.start(stream);
    await sleep(ms);
    await cap.stop();
    stream.getTracks().forEach((t) => t.stop());
    return { packets, onsets, stats: cap.stats, mode: cap.mode };
  }
  /** Push recorded packets into a Player with their original spacing; skip `drop` seqs. */
  async function play(player, packets, { drop = [] } = {}) {
    const t0 = performance.now();
    const base = packets[0].at;
    for (const p of packets) {
      const wait = p.at - base - (performance.now() - t0);
      if (wait > 0) await sleep(wait);
      const unpacked = protocol.unpackPacket(p.buf);
      if (!drop.includes(unpacked.seq)) player.push(unpacked);
    }
  }
  async function newPlayer(opts) {
    const player = new Player(opts);
    await player.init();
    await player.resume();
    return player;
  }
  /** Poll `fn` until true; throw after `ms` (a poll with a deadline, never a fixed wait). */
  async function waitFor(fn, ms = 5000, what = String(fn)) {
    const end = performance.now() + ms;
    while (performance.now() < end) { if (await fn()) return true; await sleep(20); }
    throw new Error(`not true within ${ms} ms: ${what}`);
  }
  window.H = { protocol, Capture, Player, ReplayStore, record, play, newPlayer, sleep, waitFor };
  return true;
}
""".replace("__MEDIA__", MEDIA)


@pytest.fixture
# live_asgi first: the test database is set up before Playwright starts its event loop.
def media_page(live_asgi, new_context):  # type: ignore[no-untyped-def]
    page = new_context().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_asgi.url}{MEDIA}/protocol.js")
    page.set_content("<!doctype html><title>CBLINE media</title>")
    assert page.evaluate(HARNESS)
    yield page
    assert errors == []


def test_protocol_round_trip_and_malformed_input_rejected(media_page) -> None:  # type: ignore[no-untyped-def]
    result = media_page.evaluate(
        """() => {
        const { packPacket, unpackPacket, KIND_OPUS, KIND_WEBM, HEADER_BYTES } = H.protocol;
        const frames = [new Uint8Array([1, 2, 3]), new Uint8Array([250])];
        const buf = packPacket({ kind: KIND_OPUS, last: true, seq: 65535, txId: 4294967295,
                                 captureTs: 1.7e12 + 0.25, frames });
        const head = Array.from(new Uint8Array(buf).subarray(0, 8));
        const opus = unpackPacket(buf);
        const webm = unpackPacket(packPacket({ kind: KIND_WEBM, seq: 3, txId: 9, captureTs: 5,
                                               chunk: new Uint8Array([26, 69, 223, 163]) }));
        const bad = [];
        const tryIt = (name, fn) => { try { fn(); bad.push([name, "accepted"]); }
                                      catch (e) { bad.push([name, e.name]); } };
        const good = new Uint8Array(buf);
        tryIt("short", () => unpackPacket(good.slice(0, 12).buffer));
        tryIt("truncated frame", () => unpackPacket(good.slice(0, good.length - 1).buffer));
        tryIt("dangling length byte", () => unpackPacket(new Uint8Array([...good, 0]).buffer));
        tryIt("kind 7", () => { const b = good.slice(); b[0] = 7; unpackPacket(b.buffer); });
        tryIt("unknown flag", () => { const b = good.slice(); b[1] = 2; unpackPacket(b.buffer); });
        const h = { txId: 1, captureTs: 0 };
        tryIt("pack seq overflow", () => packPacket({ ...h, kind: 1, seq: 65536, frames }));
        tryIt("pack no frames", () => packPacket({ ...h, kind: 1, seq: 0, frames: [] }));
        tryIt("empty chunk", () => packPacket({ ...h, kind: 2, seq: 0, chunk: new Uint8Array(0) }));
        return {
          HEADER_BYTES, size: buf.byteLength, head, bad,
          opus: { ...opus, frames: opus.frames.map((f) => Array.from(f)) },
          webm: { ...webm, chunk: Array.from(webm.chunk) },
        };
    }"""
    )
    assert result["HEADER_BYTES"] == 16
    assert result["size"] == 16 + (2 + 3) + (2 + 1)
    assert result["head"] == [1, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
    assert result["opus"] == {
        "kind": 1,
        "last": True,
        "seq": 65535,
        "txId": 4294967295,
        "captureTs": 1.7e12 + 0.25,
        "frames": [[1, 2, 3], [250]],
    }
    assert result["webm"] == {
        "kind": 2,
        "last": False,
        "seq": 3,
        "txId": 9,
        "captureTs": 5,
        "chunk": [26, 69, 223, 163],
    }
    assert all(outcome != "accepted" for _, outcome in result["bad"]), result["bad"]


@pytest.mark.parametrize(
    ("source", "packet_ms"), [("worklet", 20), ("processor", 20), ("worklet", 40)]
)
def test_capture_sends_a_packet_of_opus_frames_every_packet_ms(  # type: ignore[no-untyped-def]
    media_page, source: str, packet_ms: int
) -> None:
    rec = media_page.evaluate(
        """async ([source, packetMs]) => {
        const r = await H.record(2000, { source, packetMs });
        const ps = r.packets.map((p) => ({ ...H.protocol.unpackPacket(p.buf), at: p.at }));
        return {
          mode: r.mode, source: r.stats.source, onsets: r.onsets.length,
          kinds: ps.map((p) => p.kind), seqs: ps.map((p) => p.seq), last: ps.map((p) => p.last),
          frames: ps.map((p) => p.frames.length),
          sizes: ps.flatMap((p) => p.frames.map((f) => f.length)),
          ts: ps.map((p) => p.captureTs), at: ps.map((p) => p.at),
          now: performance.timeOrigin + performance.now(),
        };
    }""",
        [source, packet_ms],
    )
    n = len(rec["seqs"])
    fpp = packet_ms // 20
    assert rec["mode"] == "webcodecs" and rec["source"] == source
    # 2 s in packets of packet_ms; on a busy machine the last few may still be in the
    # encoder when the recording stops (the steps below check the cadence itself).
    assert 2000 / packet_ms - 5 <= n <= 2400 / packet_ms + 2, n
    assert set(rec["kinds"]) == {1}
    assert rec["seqs"] == list(range(n))
    assert rec["last"] == [False] * (n - 1) + [True]
    assert rec["frames"][:-1] == [fpp] * (n - 1) and 1 <= rec["frames"][-1] <= fpp
    assert all(0 < size < 400 for size in rec["sizes"])  # Opus at 24 kb/s: about 60 bytes / 20 ms
    steps = [b - a for a, b in zip(rec["ts"], rec["ts"][1:], strict=False)]
    assert all(step > 0 for step in steps)
    # Capture stamps follow the audio: packet_ms apart (the stop may pad the last one).
    assert all(abs(step - packet_ms) <= 2 for step in steps[:-1]), steps
    assert rec["ts"][-1] < rec["now"]
    # Packets leave as their audio is complete: about one every packet_ms.
    spacing = sorted(b - a for a, b in zip(rec["at"], rec["at"][1:-1], strict=False))
    assert 0.75 * packet_ms < spacing[len(spacing) // 2] < 1.25 * packet_ms, spacing
    assert rec["onsets"] >= 3  # the fake microphone beeps twice a second


def test_player_decodes_packets_into_sound_at_the_playback_tap(media_page) -> None:  # type: ignore[no-untyped-def]
    out = media_page.evaluate(
        """async () => {
        const rec = await H.record(2500);
        const player = await H.newPlayer();
        let ended = null;
        player.onEnded = (txId) => { ended = txId; };
        await H.play(player, rec.packets);
        await H.waitFor(() => ended !== null);
        const stats = await player.getStats();
        const frames = rec.packets.map((p) => H.protocol.unpackPacket(p.buf).frames.length)
          .reduce((a, b) => a + b, 0);
        return { stats, frames, ended, capOnsets: rec.onsets.length, playOnsets: player.onsets };
    }"""
    )
    stats = out["stats"]
    assert out["ended"] == 42
    assert stats["decodedFrames"] == out["frames"]
    assert stats["decodeErrors"] == 0
    assert stats["nonSilentSamples"] > 3 * 480  # beeps made it out
    # Every decoded sample was played, trimmed from a backlog, or dropped for coming after its
    # time. (Underruns and late drops depend on how busy the machine is;
    # tests/js/jitter-worklet.test.mjs pins the buffer's behaviour exactly.)
    accounted = stats["playedSamples"] + stats["skippedSamples"] + stats["lateDroppedSamples"]
    assert accounted >= out["frames"] * 960
    assert stats["state"] == "idle"
    # Most beeps are heard as beeps; on a loaded machine a late one is dropped whole (2 of 5).
    assert out["capOnsets"] >= 3 and 2 * len(out["playOnsets"]) >= out["capOnsets"]
    assert all(o["txId"] == 42 for o in out["playOnsets"])


def test_a_dropped_packet_is_concealed(media_page) -> None:  # type: ignore[no-untyped-def]
    out = media_page.evaluate(
        """async () => {
        const rec = await H.record(2000);
        const all = rec.packets.map((p) => H.protocol.unpackPacket(p.buf));
        const without = all.filter((p) => p.seq !== 12);
        const fpp = all[0].frames.length;
        // Exact accounting, free of timing: the stored packets played at once.
        const stored = await H.newPlayer();
        await Promise.race([stored.replay(without), H.sleep(8000)]);
        // Live, at the cadence the packets were made.
        const live = await H.newPlayer();
        let ended = false;
        live.onEnded = () => { ended = true; };
        await H.play(live, rec.packets, { drop: [12] });
        await H.waitFor(() => ended);
        return { stored: await stored.getStats(), live: await live.getStats(), fpp };
    }"""
    )
    stored, live = out["stored"], out["live"]
    missing = out["fpp"] * 960  # one packet: a 20 ms frame by default
    for stats in (stored, live):
        assert stats["lostPackets"] == 1
        assert stats["decodeErrors"] == 0
        assert stats["state"] == "idle"
    assert stored["concealedSamples"] == missing  # the missing packet, in its place
    # Live, part of it may already have been played while waiting for the next packet.
    assert live["concealedSamples"] >= missing
    # The hole is filled where it was: nothing waited for, nothing dropped.
    assert stored["underruns"] == 0
    assert stored["playedSamples"] == stored["decodedFrames"] * 960 + missing
    # Live: no cascade of underruns. The page's timers pace the packets, so on a busy machine
    # some come late anyway, and a 5 ms margin (steady delivery shrinks it to that) notices:
    # a few, never one every few packets.
    assert live["underruns"] <= live["packets"] // 10, live
    assert live["targetMs"] <= 120


def test_jitter_buffer_grows_after_underrun_and_resets_per_transmission(media_page) -> None:  # type: ignore[no-untyped-def]
    out = media_page.evaluate(
        """async () => {
        const rec = await H.record(1500);
        const player = await H.newPlayer();
        const targets = [];
        const ps = rec.packets.map((p) => H.protocol.unpackPacket(p.buf));
        // Deliver the first 200 ms at their cadence, stall until the buffer runs dry, then
        // the rest at once.
        for (const p of ps.slice(0, 10)) { player.push(p); await H.sleep(20); }
        await H.waitFor(async () => (await player.getStats()).underruns >= 1);
        targets.push((await player.getStats()).targetMs);
        const under = (await player.getStats()).underruns;
        for (const p of ps.slice(10)) player.push(p);
        await H.waitFor(async () => (await player.getStats()).state === "idle");
        const after = await player.getStats();
        return { under, targets, after };
    }"""
    )
    assert out["under"] >= 1
    assert 40 < out["targets"][0] <= 120  # 20 ms packets + a margin grown from 20 ms
    assert out["after"]["lateFrames"] > 0
    assert out["after"]["targetMs"] == 40  # the next transmission starts afresh


def test_mediarecorder_fallback_chunks_play_through_media_source(media_page) -> None:  # type: ignore[no-untyped-def]
    out = media_page.evaluate(
        """async () => {
        const rec = await H.record(2000, { mode: "mediarecorder", txId: 77 });
        const ps = rec.packets.map((p) => H.protocol.unpackPacket(p.buf));
        const player = await H.newPlayer();
        let ended = null;
        player.onEnded = (txId) => { ended = txId; };
        await H.play(player, rec.packets);
        await H.waitFor(() => ended !== null, 8000);
        return {
          mode: rec.mode, kinds: ps.map((p) => p.kind), seqs: ps.map((p) => p.seq),
          last: ps.map((p) => p.last),
          magic: ps.flatMap((p) => Array.from(p.chunk)).slice(0, 4),
          ts: ps.map((p) => p.captureTs), ended, stats: await player.getStats(),
        };
    }"""
    )
    n = len(out["kinds"])
    assert out["mode"] == "mediarecorder"
    assert n >= 10 and set(out["kinds"]) == {2}
    assert out["seqs"] == list(range(n))
    assert out["last"] == [False] * (n - 1) + [True]
    assert out["magic"] == [0x1A, 0x45, 0xDF, 0xA3]  # the chunks form one WebM stream (EBML header)
    assert all(b > a for a, b in zip(out["ts"], out["ts"][1:], strict=False))
    assert out["ended"] == 77
    stats = out["stats"]
    assert stats["mediaChunks"] == n
    assert stats["decodeErrors"] == 0
    assert stats["mediaSamples"] > 480 and stats["nonSilentSamples"] > 480


def test_replay_store_keeps_the_last_five_and_replays_them(media_page) -> None:  # type: ignore[no-untyped-def]
    out = media_page.evaluate(
        """async () => {
        const rec = await H.record(800);
        const store = new H.ReplayStore();
        for (let tx = 1; tx <= 7; tx++) {
          store.begin(tx, { nickname: `n${tx}` });
          for (const p of rec.packets) store.add({ ...H.protocol.unpackPacket(p.buf), txId: tx });
        }
        const player = await H.newPlayer();
        const before = (await player.getStats()).nonSilentSamples;
        const item = store.get(7);
        await Promise.race([player.replay(item.packets), H.sleep(5000)]);
        const stats = await player.getStats();
        return { ids: store.list().map((i) => i.txId), complete: item.complete,
                 nickname: item.meta.nickname, duration: store.list()[0].durationMs,
                 before, stats, missing: store.get(1) };
    }"""
    )
    assert out["ids"] == [7, 6, 5, 4, 3]
    assert out["missing"] is None
    assert out["complete"] is True and out["nickname"] == "n7"
    assert 700 <= out["duration"] <= 1000
    assert out["stats"]["nonSilentSamples"] > out["before"]
    assert out["stats"]["skippedSamples"] == 0  # a replay is not trimmed
    assert out["stats"]["state"] == "idle"


def test_nothing_is_written_to_browser_storage(live_asgi, new_context) -> None:  # type: ignore[no-untyped-def]
    context = new_context()
    # Record every attempt to persist anything, from before the modules load.
    context.add_init_script(
        """(() => {
        window.__writes = [];
        const note = (what) => window.__writes.push(what);
        const spy = (proto, name, what) => {
          const orig = proto?.[name];
          if (!orig) return;
          proto[name] = function (...a) { note(what); return orig.apply(this, a); };
        };
        spy(Storage.prototype, "setItem", "web storage");
        spy(IDBFactory.prototype, "open", "indexedDB");
        spy(self.CacheStorage?.prototype, "open", "Cache Storage");
        spy(self.CacheStorage?.prototype, "put", "Cache Storage");
        spy(self.StorageManager?.prototype, "getDirectory", "origin private file system");
    })()"""
    )
    page = context.new_page()
    page.goto(f"{live_asgi.url}{MEDIA}/protocol.js")
    page.set_content("<!doctype html><title>CBLINE media</title>")
    page.evaluate(HARNESS)
    out = page.evaluate(
        """async () => {
        const store = new H.ReplayStore();
        const player = await H.newPlayer();
        for (const [txId, mode] of [[1, "webcodecs"], [2, "mediarecorder"]]) {
          const rec = await H.record(600, { mode, txId });
          for (const p of rec.packets) {
            const u = H.protocol.unpackPacket(p.buf);
            store.add(u);
            player.push(u);
          }
          await Promise.race([player.replay(store.get(txId).packets), H.sleep(5000)]);
        }
        return {
          writes: window.__writes, local: localStorage.length, session: sessionStorage.length,
          idb: (await indexedDB.databases()).map((d) => d.name),
          caches: await caches.keys(), stored: store.list().length,
        };
    }"""
    )
    assert out["stored"] == 2  # the audio was kept, in memory
    assert out["writes"] == []
    assert out["local"] == 0 and out["session"] == 0
    assert out["idb"] == [] and out["caches"] == []


# The real jitter worklet in Chromium's audio thread, rendered offline: the page suspends the
# OfflineAudioContext at each packet's arrival time, hands the worklet that packet and waits
# for its answer (port messages are handled in order) before rendering on. Arrival times are
# exact render frames, so the outcome is the same on a busy machine as on an idle one.
DRIVE_WORKLET = """async ([seconds, pattern]) => {
  const RATE = 48000, PACKET = 960, QUANTUM = 128;
  const ctx = new OfflineAudioContext(1, RATE * seconds, RATE);
  await ctx.audioWorklet.addModule("__MEDIA__/jitter-worklet.js");
  const node = new AudioWorkletNode(ctx, "cbline-jitter", {
    numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
  });
  node.connect(ctx.destination);
  // Each question's answer resolves its promise as it arrives (no polling for it).
  const answers = new Map();
  node.port.onmessage = (e) => {
    if (e.data.type === "stats" && e.data.id) answers.get(e.data.id)?.(e.data.stats);
  };
  let asked = 0;
  const ask = () => new Promise((resolve) => {
    const id = ++asked;
    answers.set(id, resolve);
    node.port.postMessage({ type: "stats", id });
  });
  // Packet k of 20 ms lands `delay(k)` ms after its time (never before the one ahead of it).
  const delay = {
    steady: () => 0,
    bursty: (k) => 80 - 20 * (k % 5),  // five at once every 100 ms
    lossy: () => 0,
  }[pattern];
  const count = Math.floor((seconds - 0.5) * 1000 / 20);
  const landings = new Map();  // render quantum -> packets landing there
  let last = 0;
  for (let k = 0; k < count; k++) {
    const at = Math.max(last, Math.ceil(((k * 20 + delay(k)) * RATE / 1000) / QUANTUM) * QUANTUM);
    last = at;
    if (!landings.has(at)) landings.set(at, []);
    landings.get(at).push(k);
  }
  const sine = (k) => Float32Array.from({ length: PACKET },
    (_, i) => 0.5 * Math.sin(2 * Math.PI * 440 * (k * PACKET + i) / RATE));
  // Also a look at the stats shortly before the end (one suspend per frame at most).
  const midway = Math.ceil(((seconds - 0.6) * RATE) / QUANTUM) * QUANTUM;
  if (!landings.has(midway)) landings.set(midway, []);
  let before = null;
  for (const [at, ks] of landings) {
    ctx.suspend(at / RATE).then(async () => {
      for (const k of ks) {
        if (pattern === "lossy" && k === 40) continue;  // lost: the next packet says so
        if (pattern === "lossy" && k === 41) {
          node.port.postMessage({ type: "gap", key: "tx:1", samples: PACKET });
        }
        node.port.postMessage({ type: "frame", key: "tx:1", live: true, packet: PACKET,
                                samples: sine(k) });
      }
      if (ks.includes(count - 1)) node.port.postMessage({ type: "end", key: "tx:1" });
      const stats = await ask();
      if (at === midway) before = stats;
      ctx.resume();
    });
  }
  await ctx.startRendering();
  return { before, after: await ask() };
}""".replace("__MEDIA__", MEDIA)


def test_jitter_worklet_adapts_its_margin_in_the_audio_thread(media_page) -> None:  # type: ignore[no-untyped-def]
    steady = media_page.evaluate(DRIVE_WORKLET, [4, "steady"])["before"]
    # Steady 20 ms packets: the margin falls to its 5 ms floor, without a single underrun.
    assert steady["state"] == "playing"
    assert steady["underruns"] == 0
    assert steady["marginMs"] == 5 and steady["targetMs"] == 25
    assert steady["shrinks"] >= 1 and steady["skippedSamples"] > 0  # the headroom was dropped

    bursty = media_page.evaluate(DRIVE_WORKLET, [4, "bursty"])["before"]
    # Five packets at once every 100 ms: the margin grows to cover the 80 ms wait.
    assert bursty["grows"] >= 1
    assert bursty["targetMs"] >= 100 and bursty["marginMs"] >= 80

    lossy = media_page.evaluate(DRIVE_WORKLET, [3, "lossy"])
    # A lost packet is concealed in its place (20 ms), not waited for: no underrun.
    assert lossy["before"]["concealedSamples"] == 960
    assert lossy["before"]["underruns"] == 0
    assert lossy["after"]["state"] == "idle"  # the transmission played out and ended
