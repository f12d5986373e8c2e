"""Languages a user may ask chat messages to be translated into (ISO 639-1), the set the
translation backends the project supports all handle."""

from __future__ import annotations

TRANSLATION_LANGUAGES: tuple[tuple[str, str], ...] = (
    ("ar", "Arabic"),
    ("zh", "Chinese"),
    ("cs", "Czech"),
    ("nl", "Dutch"),
    ("en", "English"),
    ("fr", "French"),
    ("de", "German"),
    ("el", "Greek"),
    ("hi", "Hindi"),
    ("id", "Indonesian"),
    ("it", "Italian"),
    ("ja", "Japanese"),
    ("ko", "Korean"),
    ("pl", "Polish"),
    ("pt", "Portuguese"),
    ("ru", "Russian"),
    ("es", "Spanish"),
    ("sv", "Swedish"),
    ("tr", "Turkish"),
    ("uk", "Ukrainian"),
    ("vi", "Vietnamese"),
)
