from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.utils import timezone

from .countries import COUNTRIES
from .languages import TRANSLATION_LANGUAGES
from .models import Profile, User
from .selectors import age_on
from .services import profile_birth_date_set
from .validators import validate_photo

DATE_INPUT = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")


def clean_birth_date(value: dt.date) -> dt.date:
    today = timezone.localdate()
    if value >= today or age_on(value, today) > 120:
        raise forms.ValidationError("Enter your real birth date.")
    return value


class SignupExtraForm(forms.Form):
    """Fields allauth's sign-up forms (email and social) gain: the birth date decides which
    products open."""

    birth_date = forms.DateField(
        label="Birth date",
        widget=DATE_INPUT,
        required=True,
        help_text="Video chat is 18+, CallsApp 10+.",
    )

    def clean_birth_date(self) -> dt.date:
        return clean_birth_date(self.cleaned_data["birth_date"])

    def signup(self, request: Any, user: User) -> None:
        profile_birth_date_set(
            user=user, birth_date=self.cleaned_data["birth_date"], at_signup=True
        )


class BirthDateForm(forms.Form):
    birth_date = SignupExtraForm.base_fields["birth_date"]

    def clean_birth_date(self) -> dt.date:
        return clean_birth_date(self.cleaned_data["birth_date"])


class BirthDateChangeForm(forms.Form):
    """A correction of the birth date, for staff to review."""

    requested = forms.DateField(label="Correct birth date", widget=DATE_INPUT)
    reason = forms.CharField(
        label="Why is the current one wrong?",
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "maxlength": 500}),
    )

    def clean_requested(self) -> dt.date:
        return clean_birth_date(self.cleaned_data["requested"])


class ProfileForm(forms.ModelForm):  # type: ignore[type-arg]
    """Parses the profile page; profile_update applies it."""

    country = forms.ChoiceField(
        choices=[("", "Not said"), *COUNTRIES], required=False, label="Country"
    )
    language = forms.ChoiceField(choices=settings.LANGUAGES, label="Site language")
    translation_target = forms.ChoiceField(
        choices=[("", "Don't translate"), *TRANSLATION_LANGUAGES],
        required=False,
        label="Translate chat messages into",
    )

    class Meta:
        model = Profile
        fields = [
            "photo",
            "nickname",
            "description",
            "gender",
            "country",
            "language",
            "translation_target",
            "show_online_status",
            "send_read_receipts",
        ]
        labels = {
            "description": "About you",
            "show_online_status": "Show others when I'm online",
            "send_read_receipts": "Send read receipts",
        }
        help_texts = {
            "nickname": "Shown to others in CBLINE and chats.",
            "photo": "JPEG, PNG or WebP, at most 2 MB.",
        }
        widgets = {
            "description": forms.Textarea(attrs={"rows": 3, "maxlength": 200}),
            "photo": forms.ClearableFileInput(attrs={"accept": "image/jpeg,image/png,image/webp"}),
        }

    def __init__(self, *args: Any, privacy_locked: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if privacy_locked:
            # A disabled field ignores what is posted and keeps the (protective) current value.
            for name in ("show_online_status", "send_read_receipts"):
                self.fields[name].disabled = True

    def clean_photo(self) -> Any:
        photo = self.cleaned_data.get("photo")
        if isinstance(photo, UploadedFile):
            validate_photo(photo)
        return photo

    def changes(self) -> dict[str, Any]:
        """The cleaned values to hand to profile_update (the photo only when it changed)."""
        data = {f: self.cleaned_data[f] for f in self.Meta.fields if f != "photo"}
        if "photo" in self.changed_data:
            data["photo"] = self.cleaned_data["photo"]
        return data


class AccountDeleteForm(forms.Form):
    """Deleting the profile asks the password (if the account has one) and a typed word."""

    confirm = forms.CharField(label='Type "DELETE" to confirm', max_length=16)
    password = forms.CharField(label="Your password", widget=forms.PasswordInput, required=False)

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        if user.has_usable_password():
            self.fields["password"].required = True
        else:
            del self.fields["password"]

    def clean_confirm(self) -> str:
        value: str = self.cleaned_data["confirm"]
        if value.strip().upper() != "DELETE":
            raise forms.ValidationError('Type the word "DELETE".')
        return value

    def clean_password(self) -> str:
        value: str = self.cleaned_data.get("password", "")
        if not self.user.check_password(value):
            raise forms.ValidationError("That is not your password.")
        return value
