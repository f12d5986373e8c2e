from __future__ import annotations

import datetime as dt

from django import forms
from django.utils import timezone

from .models import User
from .selectors import age_on


class SignupExtraForm(forms.Form):
    """Fields allauth's sign-up form gains: the birth date decides which products open."""

    birth_date = forms.DateField(
        label="Birth date", widget=forms.DateInput(attrs={"type": "date"}), required=True
    )

    def clean_birth_date(self) -> dt.date:
        value: dt.date = self.cleaned_data["birth_date"]
        today = timezone.localdate()
        if value >= today or age_on(value, today) > 120:
            raise forms.ValidationError("Enter your real birth date.")
        return value

    def signup(self, request, user: User) -> None:  # type: ignore[no-untyped-def]
        from .selectors import profile_of

        profile = profile_of(user)
        profile.birth_date = self.cleaned_data["birth_date"]
        profile.save(update_fields=["birth_date", "updated_at"])


class ProfileForm(forms.ModelForm):
    class Meta:
        from .models import Profile

        model = Profile
        fields = [
            "nickname",
            "description",
            "gender",
            "birth_date",
            "country",
            "photo",
            "language",
            "translation_target",
            "show_online_status",
            "send_read_receipts",
        ]
        widgets = {"birth_date": forms.DateInput(attrs={"type": "date"})}
