from __future__ import annotations

from django import forms


class DeletionRequestForm(forms.Form):
    email = forms.EmailField(
        label="The email address of the account",
        help_text="We send a link to this address; nothing happens until it is confirmed.",
    )
    message = forms.CharField(
        label="Anything we should know (optional)",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "maxlength": 2000}),
    )
