"""The browser's shared socket client stops on exactly the codes the server calls final."""

from __future__ import annotations

import re
from pathlib import Path

from realtime import closecodes

SOCKET_JS = Path(__file__).resolve().parents[2] / "static" / "shared" / "js" / "socket.js"


def test_socket_js_final_codes_match_the_server():
    source = SOCKET_JS.read_text()
    found = re.search(r"FINAL_CLOSE_CODES = new Set\(\[([\d,\s]+)\]\)", source)
    assert found, "socket.js no longer declares FINAL_CLOSE_CODES"
    assert {int(c) for c in found.group(1).split(",")} == set(closecodes.FINAL)
    assert f"TRY_LATER = {closecodes.TRY_LATER}" in source


def test_reconnect_codes_are_not_final():
    for code in (
        closecodes.REAUTHENTICATE,
        closecodes.TRY_LATER,
        closecodes.SERVICE_RESTART,
        closecodes.TRY_AGAIN,
    ):
        assert not closecodes.is_final(code)
