"""Chat translation behind one small interface, chosen by settings.TRANSLATION_BACKEND.

"none" (the default) translates nothing; "libretranslate" asks a LibreTranslate server
(POST /translate). A translation is a nicety: any failure or a slow answer gives None and
the chat line is delivered untranslated. Text is sent to the translator and kept nowhere.
"""

from __future__ import annotations

import logging
from typing import Protocol

import requests
from django.conf import settings

log = logging.getLogger(__name__)


class TranslationBackend(Protocol):
    def translate(self, text: str, *, source: str, target: str) -> str | None: ...


class NoTranslation:
    def translate(self, text: str, *, source: str, target: str) -> str | None:
        return None


class LibreTranslate:
    def __init__(self, url: str, api_key: str = "", timeout: float = 2.0) -> None:
        self.endpoint = url.rstrip("/") + "/translate"
        self.api_key = api_key
        self.timeout = timeout

    def translate(self, text: str, *, source: str, target: str) -> str | None:
        payload = {
            "q": text,
            "source": source or "auto",
            "target": target,
            "format": "text",
            "api_key": self.api_key,
        }
        try:
            resp = requests.post(self.endpoint, json=payload, timeout=self.timeout)
            resp.raise_for_status()
            translated = resp.json().get("translatedText")
        except (requests.RequestException, ValueError, AttributeError) as exc:
            log.warning("translation %s->%s failed: %s", source, target, exc)
            return None
        return translated if isinstance(translated, str) else None


def get_backend() -> TranslationBackend:
    name = settings.TRANSLATION_BACKEND
    if name == "libretranslate" and settings.LIBRETRANSLATE_URL:
        return LibreTranslate(
            settings.LIBRETRANSLATE_URL,
            settings.LIBRETRANSLATE_API_KEY,
            timeout=settings.VIDEOCHAT_TRANSLATION_TIMEOUT_SECONDS,
        )
    return NoTranslation()


def is_available() -> bool:
    """Whether chat lines can be translated at all (a backend is configured)."""
    return not isinstance(get_backend(), NoTranslation)


def base_language(code: str) -> str:
    """ "pt-BR" and "pt" are one language for deciding whether to translate."""
    base = code.split("-")[0].split("_")[0].lower()
    return base if base.isascii() and base.isalpha() else ""


def translate(text: str, *, source: str, target: str) -> str | None:
    """The text in `target`, or None when no translation is wanted, needed or available."""
    if not target or base_language(source) == base_language(target):
        return None
    return get_backend().translate(text, source=source, target=target)
