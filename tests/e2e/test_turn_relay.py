"""A video call that may only go through TURN (iceTransportPolicy "relay") between two
Chromium pages, through Debian's coturn configured with deploy/coturn/turnserver.conf and
the credentials the app issues (realtime.turn.ice_servers, the `ready` frame's ICE
servers); expired credentials are refused by coturn."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from realtime.turn import ice_servers
from tests.coturn_stack import TurnServer, start_turnserver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

PEER = """async ([iceServers, send]) => {
  window.pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: "relay" });
  window.candidates = [];
  window.candidateErrors = [];
  pc.addEventListener("icecandidate", (e) => e.candidate && candidates.push(e.candidate.type));
  pc.addEventListener("icecandidateerror", (e) => candidateErrors.push(e.errorCode));
  if (send) {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true });
    stream.getTracks().forEach((t) => pc.addTrack(t, stream));
  } else {
    pc.addTransceiver("video", { direction: "recvonly" });
    window.video = document.createElement("video");
    video.muted = true;
    video.autoplay = true;
    document.body.append(video);
    pc.addEventListener("track", (e) => {
      video.srcObject = e.streams[0] || new MediaStream([e.track]);
    });
  }
}"""

GATHERED = """async () => {
  if (pc.iceGatheringState !== "complete") {
    await new Promise((ok) => pc.addEventListener("icegatheringstatechange",
      () => pc.iceGatheringState === "complete" && ok()));
  }
  return pc.localDescription.sdp;
}"""

SELECTED_TYPES = """async () => {
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      pair = stats.get(s.selectedCandidatePairId);
    }
  });
  return pair && [
    stats.get(pair.localCandidateId).candidateType,
    stats.get(pair.remoteCandidateId).candidateType,
  ];
}"""


@pytest.fixture
def turn(tmp_path: Path, settings) -> Iterator[TurnServer]:  # type: ignore[no-untyped-def]
    server = start_turnserver(tmp_path / "coturn", secrets.token_urlsafe(24))
    settings.VIDEOCHAT_TURN_URLS = [server.url]
    settings.VIDEOCHAT_TURN_SECRET = server.secret
    settings.VIDEOCHAT_STUN_URLS = []
    yield server
    server.stop()


def open_page(new_context, server, *, camera: bool):  # type: ignore[no-untyped-def]
    page = new_context(permissions=["camera"] if camera else []).new_page()
    page.goto(f"{server.url}/accounts/login/")
    return page


def test_a_relay_only_call_connects_with_video_through_coturn(live_asgi, new_context, turn) -> None:  # type: ignore[no-untyped-def]
    caller = open_page(new_context, live_asgi, camera=True)
    callee = open_page(new_context, live_asgi, camera=False)
    caller.evaluate(PEER, [ice_servers(user_id=1), True])
    callee.evaluate(PEER, [ice_servers(user_id=2), False])

    caller.evaluate("async () => pc.setLocalDescription(await pc.createOffer())")
    offer = caller.evaluate(GATHERED)
    callee.evaluate(
        "async (sdp) => { await pc.setRemoteDescription({ type: 'offer', sdp });"
        " await pc.setLocalDescription(await pc.createAnswer()); }",
        offer,
    )
    answer = callee.evaluate(GATHERED)
    caller.evaluate("(sdp) => pc.setRemoteDescription({ type: 'answer', sdp })", answer)

    # Only relayed candidates were offered: no host or server-reflexive address leaked.
    for page in (caller, callee):
        kinds = page.evaluate("() => candidates")
        assert kinds and set(kinds) == {"relay"}, kinds
    for page in (caller, callee):
        page.wait_for_function(
            "() => pc.connectionState === 'connected'", polling=100, timeout=30_000
        )
    callee.wait_for_function("() => video.videoWidth > 0", polling=100, timeout=30_000)
    assert callee.evaluate("() => video.videoWidth") == 640
    assert caller.evaluate(SELECTED_TYPES) == ["relay", "relay"]
    assert callee.evaluate(SELECTED_TYPES) == ["relay", "relay"]


def test_expired_credentials_are_refused(live_asgi, new_context, turn, settings) -> None:  # type: ignore[no-untyped-def]
    long_ago = time.time() - settings.VIDEOCHAT_TURN_TTL_SECONDS - 3600
    page = open_page(new_context, live_asgi, camera=True)
    page.evaluate(PEER, [ice_servers(user_id=1, now=long_ago), True])
    page.evaluate("async () => pc.setLocalDescription(await pc.createOffer())")
    page.evaluate(GATHERED)
    assert page.evaluate("() => candidates") == []  # no relay allocated
    errors = page.evaluate("() => candidateErrors")
    assert 401 in errors, (errors, turn.log_tail())  # coturn: unauthorized
    # The same page with a fresh credential gets a relay: it was the expiry.
    page.evaluate(PEER, [ice_servers(user_id=1), True])
    page.evaluate("async () => pc.setLocalDescription(await pc.createOffer())")
    page.evaluate(GATHERED)
    fresh = page.evaluate("() => candidates")
    assert fresh and set(fresh) == {"relay"}, fresh
