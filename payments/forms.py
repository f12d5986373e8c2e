from __future__ import annotations

from typing import Any

from django import forms


class CheckoutForm(forms.Form):
    price = forms.IntegerField(min_value=1)
    provider = forms.ChoiceField(choices=[])

    def __init__(self, *args: Any, providers: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["provider"].choices = [(p, p) for p in providers]  # type: ignore[attr-defined]
