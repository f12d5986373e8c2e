"""A local HTTP server speaking LibreTranslate's /translate API, for translation tests.

It "translates" by tagging the text with the target language, records what it was asked,
and can be told to fail, or to hold its answers (a translator too slow to wait for) until
the test lets them go.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeLibreTranslate:
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False
    # Cleared: requests wait for it (set again when the server stops).
    answering: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.answering.set()


@contextmanager
def libretranslate_server() -> Iterator[FakeLibreTranslate]:
    state = FakeLibreTranslate()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/translate":
                self.send_response(404)
                self.end_headers()
                return
            payload = json.loads(body)
            state.requests.append(payload)
            state.answering.wait(timeout=30)
            if state.fail:
                out, status = {"error": "Internal error"}, 500
            else:
                out, status = {"translatedText": f"[{payload['target']}] {payload['q']}"}, 200
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client gave up waiting (timeout tests)
                self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        state.answering.set()
        server.shutdown()
        server.server_close()
