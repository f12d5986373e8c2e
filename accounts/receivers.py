"""Django and allauth signals that accounts/ listens to, each handing over to a service.
Connected in AccountsConfig.ready. They are here because every way in or out goes through
them: allauth's views, the admin, `manage.py changepassword`, the test client."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from . import services
from .models import Device, User
from .selectors import DEVICE_SESSION_KEY


def session_device_bind(request: HttpRequest, device: Device) -> None:
    request.session[DEVICE_SESSION_KEY] = device.pk
    request.device = device  # type: ignore[attr-defined]


def logged_in(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    """Every login issues a device bound to the new session."""
    if request is None or not hasattr(request, "session"):
        return
    if request.session.session_key is None:
        request.session.save()
    device = services.device_issue(
        user=user,
        session_key=request.session.session_key,  # type: ignore[arg-type]
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
    )
    session_device_bind(request, device)


def logged_out(sender: Any, request: HttpRequest | None, user: User | None, **kwargs: Any) -> None:
    """Logout ends this session only: its device and its sockets."""
    key = request.session.session_key if request is not None else None
    if user is not None and key:
        services.session_end(session_key=key)


def user_saved(sender: Any, instance: User, created: bool, **kwargs: Any) -> None:
    loaded = instance.auth_state_loaded
    if created or loaded is None:
        return
    old_password, old_active = loaded
    instance.auth_state_loaded = (instance.password, instance.is_active)
    password_changed = old_password is not None and instance.password != old_password
    if instance.auth_change_handled:
        instance.auth_change_handled = False
        password_changed = False
    deactivated = bool(old_active) and not instance.is_active
    if password_changed or deactivated:
        services.user_auth_changed(
            user=instance, password_changed=password_changed, deactivated=deactivated
        )


def password_changed_here(request: HttpRequest, user: User, **kwargs: Any) -> None:
    """The user changed (or set, or reset) their password: their other sessions end."""
    # Django has just cycled this session's key (update_session_auth_hash); the device it
    # holds is found through the session data, and DeviceMiddleware rebinds the key.
    keep = request.session.get(DEVICE_SESSION_KEY) if request.user.is_authenticated else None
    services.sessions_end_others(user=user, keep_device_pk=keep)
