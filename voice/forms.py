"""HTTP input of the CBLINE page: parsed here, acted on by voice.services."""

from __future__ import annotations

from django import forms

from .services import MAX_RANGE_KM


class ChannelCreateForm(forms.Form):
    name = forms.CharField(max_length=64)
    description = forms.CharField(max_length=300, required=False)
    # Blank = a public channel; otherwise stored only as a password hash.
    password = forms.CharField(max_length=128, required=False, strip=False)
    range_km = forms.IntegerField(min_value=0, max_value=MAX_RANGE_KM, required=False)


class IdentityForm(forms.Form):
    nickname = forms.CharField(max_length=32)
    description = forms.CharField(max_length=200, required=False)
