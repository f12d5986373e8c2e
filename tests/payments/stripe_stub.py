"""A local stand-in that speaks the part of Stripe's HTTP API we use, so the real SDK (and
our adapter) run unchanged against it: settings.STRIPE_API_BASE points here. It also signs
webhook deliveries the way Stripe does (t=..., v1=HMAC-SHA256 of "t.body")."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

WEBHOOK_SECRET = "whsec_test_made_by_the_test"
SECRET_KEY = "sk_test_made_by_the_test"


@dataclass
class StripeStub:
    url: str = ""
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: Any = field(default_factory=lambda: itertools.count(1))

    def _id(self, prefix: str) -> str:
        return f"{prefix}_test_{next(self.ids):06d}"

    # --- what the buyer or the bank does on Stripe's side
    def pay(
        self,
        session_id: str,
        *,
        email: str = "payer@example.com",
        name: str = "Pat Payer",
        country: str = "DE",
        period_days: int = 30,
    ) -> None:
        with self.lock:
            s = self.sessions[session_id]
            s.update(status="complete", payment_status="paid", customer=self._id("cus"))
            s["customer_details"] = {"email": email, "name": name, "address": {"country": country}}
            if s["mode"] == "payment":
                charge = {
                    "id": self._id("ch"),
                    "object": "charge",
                    "refunded": False,
                    "disputed": False,
                }
                s["payment_intent"] = {
                    "id": self._id("pi"),
                    "object": "payment_intent",
                    "status": "succeeded",
                    "latest_charge": charge,
                }
            else:
                sub_id = self._id("sub")
                end = int(time.time()) + period_days * 86400
                self.subscriptions[sub_id] = {
                    "id": sub_id,
                    "object": "subscription",
                    "status": "active",
                    "cancel_at_period_end": False,
                    "latest_invoice": self._id("in"),
                    "items": {
                        "object": "list",
                        "data": [
                            {
                                "id": self._id("si"),
                                "object": "subscription_item",
                                "current_period_end": end,
                            }
                        ],
                    },
                }
                s["subscription"] = sub_id

    def refund(self, session_id: str) -> None:
        with self.lock:
            self.sessions[session_id]["payment_intent"]["latest_charge"]["refunded"] = True

    def dispute(self, session_id: str) -> None:
        with self.lock:
            self.sessions[session_id]["payment_intent"]["latest_charge"]["disputed"] = True

    def set_subscription(self, sub_id: str, **changes: Any) -> None:
        with self.lock:
            self.subscriptions[sub_id].update(changes)

    # --- webhook deliveries, signed as Stripe signs them
    def event(
        self,
        kind: str,
        obj: dict[str, Any],
        *,
        event_id: str | None = None,
        created: int | None = None,
    ) -> dict[str, Any]:
        return {
            "id": event_id or self._id("evt"),
            "object": "event",
            "type": kind,
            "created": created or int(time.time()),
            "api_version": "2026-10-28.endive",
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
        }

    @staticmethod
    def sign(body: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
        t = int(time.time()) if timestamp is None else timestamp
        mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return f"t={t},v1={mac}"

    # --- the API
    def session_view(self, session_id: str, expand: list[str]) -> dict[str, Any]:
        s = json.loads(json.dumps(self.sessions[session_id]))
        if s.get("subscription") and "subscription" in expand:
            s["subscription"] = json.loads(json.dumps(self.subscriptions[s["subscription"]]))
        pi = s.get("payment_intent")
        if pi and "payment_intent.latest_charge" not in expand:
            s["payment_intent"] = pi["id"]
        return s

    def handle(self, method: str, path: str, params: dict[str, list[str]]) -> tuple[int, Any]:
        self.requests.append((method, path, params))
        one = {k: v[0] for k, v in params.items()}
        parts = path.strip("/").split("/")
        with self.lock:
            if method == "POST" and path == "/v1/checkout/sessions":
                sid = self._id("cs")
                amount = int(one.get("line_items[0][price_data][unit_amount]", "0"))
                self.sessions[sid] = {
                    "id": sid,
                    "object": "checkout.session",
                    "mode": one["mode"],
                    "status": "open",
                    "payment_status": "unpaid",
                    "url": f"{self.url}/pay/{sid}",
                    "amount_total": amount,
                    "currency": one.get("line_items[0][price_data][currency]", "eur"),
                    "created": int(time.time()),
                    "customer": None,
                    "customer_details": None,
                    "client_reference_id": one.get("client_reference_id"),
                    "metadata": {"order_id": one.get("metadata[order_id]")},
                    "payment_intent": None,
                    "subscription": None,
                    "success_url": one.get("success_url"),
                }
                return 200, self.sessions[sid]
            if method == "GET" and parts[:3] == ["v1", "checkout", "sessions"]:
                expand = [v for k, vs in params.items() if k.startswith("expand") for v in vs]
                if parts[3] not in self.sessions:
                    return 404, {
                        "error": {
                            "type": "invalid_request_error",
                            "message": "No such checkout.session",
                        }
                    }
                return 200, self.session_view(parts[3], expand)
            if method == "POST" and path == "/v1/refunds":
                pi_id = one["payment_intent"]
                for s in self.sessions.values():
                    pi = s.get("payment_intent")
                    if pi and pi["id"] == pi_id:
                        pi["latest_charge"]["refunded"] = True
                        return 200, {
                            "id": self._id("re"),
                            "object": "refund",
                            "payment_intent": pi_id,
                            "status": "succeeded",
                        }
                return 404, {"error": {"type": "invalid_request_error", "message": "No such pi"}}
            if parts[:2] == ["v1", "subscriptions"] and parts[2] in self.subscriptions:
                sub = self.subscriptions[parts[2]]
                if method == "DELETE":
                    sub["status"] = "canceled"
                elif method == "POST" and "cancel_at_period_end" in one:
                    sub["cancel_at_period_end"] = one["cancel_at_period_end"] == "true"
                return 200, sub
        return 404, {"error": {"type": "invalid_request_error", "message": f"no route {path}"}}


def serve() -> tuple[StripeStub, ThreadingHTTPServer]:
    stub = StripeStub()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            params = parse_qs(split.query, keep_blank_values=True)
            params.update(parse_qs(body, keep_blank_values=True))
            if method == "GET" and split.path.startswith("/pay/"):
                page = (
                    b"<!doctype html><title>Stripe Checkout (test stand-in)</title>"
                    b"<h1 data-testid='stripe-checkout'>Stripe Checkout</h1>"
                )
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            status, payload = stub.handle(method, split.path, params)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Request-Id", "req_test")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def do_DELETE(self) -> None:
            self._answer("DELETE")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return stub, httpd
