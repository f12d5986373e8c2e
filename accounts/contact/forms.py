from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from .models import ContactTopic


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one input (Django's documented recipe)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> Any:
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(d, initial) for d in data]
        return [single(data, initial)] if data else []


class ContactForm(forms.Form):
    name = forms.CharField(label="Your name", max_length=100)
    email = forms.EmailField(label="Your email", help_text="We answer to this address.")
    topic = forms.ChoiceField(label="About", choices=ContactTopic.choices)
    message = forms.CharField(
        label="Message",
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 6, "maxlength": 5000}),
    )
    attachments = MultipleFileField(
        label="Attachments (optional)",
        required=False,
        help_text="",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["attachments"].help_text = (
            f"Up to {settings.CONTACT_MAX_ATTACHMENTS} files, "
            f"{settings.CONTACT_MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB each: screenshots "
            "(PNG, JPEG, GIF, WebP), PDF, plain text or ZIP."
        )
