"""Fixtures for accounts tests: the social providers' HTTP APIs answered at the transport.

Facebook, VK and X cannot be reached from tests. Rather than stubbing any of our code or
allauth's, `providers` replaces `requests.adapters.HTTPAdapter.send` - the last step before a
socket - with canned responses in each provider's documented shape, so the real allauth
views, provider adapters and our adapters all run.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.test import Client

# The provider endpoints allauth 65 calls (see each provider's views.py).
FB_GRAPH = "https://graph.facebook.com/v19.0"
VK_TOKEN = "https://id.vk.ru/oauth2/auth"
VK_USER_INFO = "https://id.vk.ru/oauth2/user_info"
X_TOKEN = "https://api.x.com/2/oauth2/token"
X_ME = "https://api.x.com/2/users/me"


@dataclass
class ProviderStub:
    routes: list[tuple[str, str, int, Any]] = field(default_factory=list)
    calls: list[requests.PreparedRequest] = field(default_factory=list)

    def on(self, method: str, url: str, payload: Any, status: int = 200) -> None:
        # Later routes win, so a test can change what a provider answers.
        self.routes.insert(0, (method, url, status, payload))

    def send(self, request: requests.PreparedRequest) -> requests.Response:
        self.calls.append(request)
        base = (request.url or "").split("?", 1)[0]
        for method, url, status, payload in self.routes:
            if request.method == method and base == url:
                response = requests.Response()
                response.status_code = status
                response._content = json.dumps(payload).encode()
                response.headers["Content-Type"] = "application/json; charset=utf-8"
                response.url = request.url or ""
                response.request = request
                return response
        raise requests.ConnectionError(f"no network in tests: {request.method} {request.url}")

    # --- the providers' documented payloads
    def facebook(self, **me: Any) -> None:
        self.on(
            "GET",
            f"{FB_GRAPH}/oauth/access_token",
            {"access_token": "fb-token", "token_type": "bearer", "expires_in": 5183944},
        )
        self.on("GET", f"{FB_GRAPH}/me", me)

    def vk(self, **user: Any) -> None:
        self.on(
            "POST",
            VK_TOKEN,
            {
                "access_token": "vk-token",
                "refresh_token": "vk-refresh",
                "id_token": "vk-id",
                "token_type": "Bearer",
                "expires_in": 3600,
                "user_id": int(user["user_id"]),
                "state": "s",
                "scope": "vkid.personal_info email",
            },
        )
        self.on("POST", VK_USER_INFO, {"user": user})

    def x(self, **data: Any) -> None:
        self.on(
            "POST",
            X_TOKEN,
            {
                "token_type": "bearer",
                "expires_in": 7200,
                "access_token": "x-token",
                "scope": "users.read tweet.read",
            },
        )
        self.on("GET", X_ME, {"data": data})


@pytest.fixture
def providers(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[ProviderStub]:
    stub = ProviderStub()

    def send(adapter: Any, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        return stub.send(request)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    # Apps configured as the environment would (our adapter hides apps without a client id).
    configured = copy.deepcopy(settings.SOCIALACCOUNT_PROVIDERS)
    for provider in configured.values():
        provider["APPS"] = [{"client_id": "test-client-id", "secret": "test-secret"}]
    settings.SOCIALACCOUNT_PROVIDERS = configured
    yield stub


def social_login(client: Client, provider: str, *, process: str = "login", **callback: str) -> Any:
    """Drive a real OAuth2 round trip: POST the provider's login view, read the state it put
    in the authorize URL, come back to the callback with a code. Returns the final response."""
    start = client.post(f"/accounts/{provider}/login/", {"process": process})
    assert start.status_code == 302, start.content[:500]
    query = parse_qs(urlparse(start["Location"]).query)
    params = {"code": "the-code", "state": query["state"][0], **callback}
    return client.get(f"/accounts/{provider}/login/callback/", params)


@pytest.fixture
def login_with() -> Callable[..., Any]:
    return social_login
