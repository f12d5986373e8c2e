"""allauth customisation, kept to its adapters.

- Every new account gets a Profile; its country is guessed from the IP (GeoIP) when the
  sign-up gave none.
- A social login whose email matches an existing account joins that account only for the
  providers in settings.SOCIALACCOUNT_TRUSTED_EMAIL_PROVIDERS. For any other provider allauth's
  own flow applies: the social sign-up form opens, says the email is taken and asks for
  another one (or none) and the birth date.
- A social login fills gender, birth date and country from the provider where the profile
  has none; it never overwrites what the user set.
- Whoever signs up or logs in without a birth date is sent to the page that asks for it.
"""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.models import SocialLogin
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import urlencode

from . import selectors, services
from .models import User
from .social import profile_data_from


def _client_ip(request: HttpRequest) -> str | None:
    try:
        return DefaultAccountAdapter(request).get_client_ip(request)
    except PermissionDenied:
        return None


class AccountAdapter(DefaultAccountAdapter):
    def save_user(self, request: HttpRequest, user: Any, form: Any, commit: bool = True) -> Any:
        user = super().save_user(request, user, form, commit=commit)
        if commit:
            services.profile_country_guess(user=user, ip=_client_ip(request))
        return user

    def add_message(
        self,
        request: HttpRequest,
        level: int,
        message_template: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        # A logout leaves an empty session, so its cookie is deleted (the cookies page says
        # so); "You have signed out" would keep one alive just to say it.
        if message_template == "account/messages/logged_out.txt":
            return
        super().add_message(request, level, message_template, *args, **kwargs)

    def set_password(self, user: Any, password: str) -> None:
        # allauth's change, set and reset flows: the signal they send next ends the user's
        # other sessions (accounts.receivers.password_changed_here) and leaves this one and
        # its sockets alone, so the generic "sockets come back and are checked" close is not
        # wanted here (it would race this response's new session cookie).
        user.auth_change_handled = True
        super().set_password(user, password)

    def post_login(self, request: HttpRequest, user: Any, **kwargs: Any) -> Any:
        # Every way in (email or social, log-in or sign-up, with or without ?next=) passes
        # here: whoever has no birth date is asked for it before going on.
        response = super().post_login(request, user, **kwargs)
        if isinstance(response, HttpResponseRedirect) and selectors.birth_date_missing(user):
            query = urlencode({"next": response["Location"]})
            response["Location"] = f"{reverse('birth_date')}?{query}"
        return response


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def list_apps(
        self, request: HttpRequest, provider: Any = None, client_id: Any = None
    ) -> list[Any]:
        # A provider whose credentials are not configured (env unset) is not offered.
        apps = super().list_apps(request, provider=provider, client_id=client_id)
        return [app for app in apps if app.client_id]

    def pre_social_login(self, request: HttpRequest, sociallogin: SocialLogin) -> None:
        account = sociallogin.account
        if sociallogin.state.get("process") == "connect":
            # A logged-in user adds a provider: never join by email, fill their own profile
            # unless the social account belongs to somebody else (allauth refuses that).
            owner = sociallogin.user if sociallogin.is_existing else request.user
            if request.user.is_authenticated and owner == request.user:
                self._fill_profile(request.user, account.provider, account.extra_data)  # type: ignore[arg-type]
            return
        if not sociallogin.is_existing:
            user = self._trusted_email_owner(sociallogin)
            if user is not None:
                sociallogin.connect(request, user)
        if sociallogin.is_existing:
            self._fill_profile(sociallogin.user, account.provider, account.extra_data)  # type: ignore[arg-type]

    def save_user(self, request: HttpRequest, sociallogin: SocialLogin, form: Any = None) -> Any:
        if form is not None:
            # The sign-up form's email (perhaps none) replaces the provider's, which may be
            # another account's: allauth would otherwise still attach it to the new user.
            chosen = (form.cleaned_data.get("email") or "").lower()
            sociallogin.email_addresses = [
                a for a in sociallogin.email_addresses if a.email.lower() == chosen
            ]
        user = super().save_user(request, sociallogin, form)
        self._fill_profile(user, sociallogin.account.provider, sociallogin.account.extra_data)
        services.profile_country_guess(user=user, ip=_client_ip(request))
        return user

    def get_signup_form_initial_data(self, sociallogin: SocialLogin) -> dict[str, Any]:
        initial = super().get_signup_form_initial_data(sociallogin)
        found = profile_data_from(sociallogin.account.provider, sociallogin.account.extra_data)
        if found.get("birth_date"):
            initial["birth_date"] = found["birth_date"]
        return initial

    @staticmethod
    def _trusted_email_owner(sociallogin: SocialLogin) -> User | None:
        if sociallogin.account.provider not in settings.SOCIALACCOUNT_TRUSTED_EMAIL_PROVIDERS:
            return None
        emails = [a.email for a in sociallogin.email_addresses if a.email]
        if sociallogin.user is not None and sociallogin.user.email:
            emails.append(sociallogin.user.email)
        for email in emails:
            user = selectors.user_by_email(email)
            if user is not None:
                return user
        return None

    @staticmethod
    def _fill_profile(user: User, provider: str, extra_data: object) -> None:
        services.profile_fill_from_provider(user=user, provider=provider, extra_data=extra_data)
