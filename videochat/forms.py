from __future__ import annotations

import json
from typing import Any

from django import forms

from accounts.models import Gender

from .models import ReportReason

LANGUAGE_CODE = r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})?$"


class ReportForm(forms.Form):
    """POST /videochat/report/: the reported user is never a field; the server knows it."""

    reason = forms.ChoiceField(choices=ReportReason.choices)
    chat_lines = forms.CharField(required=False, max_length=256 * 1024)
    # A plain FileField: services.frame_validate checks the image (format, size, pixels).
    frame = forms.FileField(required=False)

    def clean_chat_lines(self) -> Any:
        raw = self.cleaned_data["chat_lines"]
        if not raw:
            return []
        try:
            return json.loads(raw)
        except ValueError:
            raise forms.ValidationError("chat_lines is not JSON") from None


class ChatSettingsForm(forms.Form):
    gender = forms.ChoiceField(choices=Gender.choices, required=False)
    language = forms.RegexField(regex=LANGUAGE_CODE, max_length=8)
    translation_target = forms.RegexField(regex=LANGUAGE_CODE, max_length=8, required=False)


class AppealForm(forms.Form):
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5, "maxlength": 2000}),
        max_length=2000,
        label="Why should the ban be lifted?",
    )
