from __future__ import annotations

from typing import Any

from allauth.socialaccount.adapter import get_adapter as social_adapter
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from pydantic import ValidationError

from realtime.errors import ServiceError

from . import selectors, services
from .forms import AccountDeleteForm, BirthDateChangeForm, BirthDateForm, ProfileForm
from .schemas import DeviceIn

# The three products the account opens, in the order the home page shows them.
PRODUCTS: tuple[dict[str, Any], ...] = (
    {
        "key": "voice",
        "name": "CBLINE",
        "tagline": "Push-to-talk walkie-talkie",
        "url": "/cbline/",
        "cta": "Open CBLINE",
        "points": [
            "Join a channel, hold the button, be heard live",
            "Range narrowed to people near you; others see only your country",
            "Voice leaves the server within seconds",
        ],
    },
    {
        "key": "videochat",
        "name": "Video Chat Alternative",
        "tagline": "Meet someone new, face to face",
        "url": "/videochat/",
        "cta": "Start video chat",
        "points": [
            "Random 1:1 video, peer to peer",
            "Filter by gender and country; chat with translation",
            "No record of who talked with whom",
        ],
    },
    {
        "key": "messaging",
        "name": "CallsApp",
        "tagline": "Private messages and calls",
        "url": "/messaging/",
        "cta": "Open CallsApp",
        "points": [
            "End-to-end encrypted chats, groups, media and calls",
            "All your devices, each with its own keys",
            "Messages leave the server once delivered",
        ],
    },
)


def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    products = []
    for product in PRODUCTS:
        minimum = settings.AGE_RULES.get(product["key"], 0)
        allowed = None  # unknown for visitors
        if user.is_authenticated:
            allowed = selectors.meets_age_rule(user, product["key"])  # type: ignore[arg-type]
        products.append({**product, "min_age": minimum, "allowed": allowed})
    missing_birth_date = user.is_authenticated and selectors.birth_date_missing(user)  # type: ignore[arg-type]
    # Only the logins that are configured here (our adapter hides apps without a client id).
    social = [p.name for p in social_adapter().list_providers(request)]
    context = {
        "products": products,
        "missing_birth_date": missing_birth_date,
        "social_logins": social,
    }
    return render(request, "home.html", context)


@login_required
def profile_edit(request: HttpRequest) -> HttpResponse:
    user = request.user
    profile = selectors.profile_of(user)  # type: ignore[arg-type]
    locked = selectors.privacy_defaults_locked(profile)
    form = ProfileForm(
        request.POST or None, request.FILES or None, instance=profile, privacy_locked=locked
    )
    if request.method == "POST" and form.is_valid():
        profile = services.profile_update(user=user, data=form.changes())  # type: ignore[arg-type]
        messages.success(request, "Profile saved.")
        # The site language follows the profile (accounts/privacy/cookies.py), no cookie.
        return redirect("profile_edit")
    # An invalid form has written its input onto the instance: show what is stored.
    profile = selectors.profile_of(user)  # type: ignore[arg-type]
    context = {
        "form": form,
        "profile": profile,
        "privacy_locked": locked,
        "birth_date_change": selectors.birth_date_change_pending(user),  # type: ignore[arg-type]
    }
    return render(request, "accounts/profile_edit.html", context)


@login_required
def birth_date(request: HttpRequest) -> HttpResponse:
    """Asks the birth date of whoever has none (a social sign-up whose provider gave none)."""
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}):
        next_url = ""
    if not selectors.birth_date_missing(request.user):  # type: ignore[arg-type]
        return redirect("birth_date_change")  # given once; corrections go through staff
    form = BirthDateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.profile_birth_date_set(
                user=request.user,  # type: ignore[arg-type]
                birth_date=form.cleaned_data["birth_date"],
            )
        except ServiceError as e:  # set by another tab meanwhile
            form.add_error(None, e.detail)
        else:
            return redirect(next_url or "home")
    return render(request, "accounts/birth_date.html", {"form": form, "next": next_url})


@login_required
def birth_date_change(request: HttpRequest) -> HttpResponse:
    """Ask staff to correct the birth date (it gates Video chat and CallsApp, so the user
    cannot simply edit it)."""
    user = request.user
    if selectors.birth_date_missing(user):  # type: ignore[arg-type]
        return redirect("birth_date")
    form = BirthDateChangeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.birth_date_change_request(
                user=user,  # type: ignore[arg-type]
                requested=form.cleaned_data["requested"],
                reason=form.cleaned_data["reason"],
            )
        except ServiceError as e:
            form.add_error(None, e.detail)
        else:
            messages.success(
                request, "Request sent. Staff will review it; this page shows their answer."
            )
            return redirect("birth_date_change")
    context = {
        "form": form,
        "profile": selectors.profile_of(user),  # type: ignore[arg-type]
        "pending": selectors.birth_date_change_pending(user),  # type: ignore[arg-type]
        "history": selectors.birth_date_changes_decided(user),  # type: ignore[arg-type]
    }
    return render(request, "accounts/birth_date_change.html", context)


@login_required
def devices(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "accounts/devices.html",
        {
            "devices": selectors.devices_of(request.user),  # type: ignore[arg-type]
            "current": request.device,  # type: ignore[attr-defined]
        },
    )


@require_POST
def device_describe(request: HttpRequest) -> JsonResponse:
    """The browser says what it is; it describes only the device of its own session."""
    # A JSON endpoint: answer 401 rather than redirecting a fetch to the login page.
    device = getattr(request, "device", None)
    if not request.user.is_authenticated or device is None:
        return JsonResponse({"error": "not logged in"}, status=401)
    try:
        data = DeviceIn.model_validate_json(request.body)
    except ValidationError:
        return JsonResponse({"error": "invalid device description"}, status=400)
    device = services.device_describe(device=device, **data.model_dump())
    return JsonResponse({"device_id": device.device_id})


@login_required
@require_POST
def device_forget(request: HttpRequest, pk: int) -> HttpResponse:
    current = request.device  # type: ignore[attr-defined]
    if services.device_forget(user=request.user, device_pk=pk):  # type: ignore[arg-type]
        if current is not None and current.pk == pk:
            logout(request)  # this browser itself: its session is gone already
            return redirect("home")
        messages.success(request, "Device signed out and forgotten.")
    return redirect("devices")


@login_required
@require_POST
def sessions_end_all(request: HttpRequest) -> HttpResponse:
    services.sessions_end_all(user=request.user)  # type: ignore[arg-type]
    logout(request)
    messages.success(request, "Signed out on every device.")
    return redirect("home")


@login_required
def account_delete(request: HttpRequest) -> HttpResponse:
    form = AccountDeleteForm(request.POST or None, user=request.user)  # type: ignore[arg-type]
    if request.method == "POST" and form.is_valid():
        services.account_delete_request(user=request.user)  # type: ignore[arg-type]
        logout(request)
        messages.success(
            request,
            "Your profile is deleted. Its data will be erased within "
            f"{settings.ACCOUNT_DELETION_GRACE_DAYS} days.",
        )
        return redirect("home")
    return render(
        request,
        "accounts/account_delete.html",
        {"form": form, "grace_days": settings.ACCOUNT_DELETION_GRACE_DAYS},
    )


def media_file(request: HttpRequest, name: str) -> HttpResponse | FileResponse:
    """An uploaded file, to whoever may read it (404 to anyone else: a name says nothing).
    Behind nginx, MEDIA_X_ACCEL_REDIRECT hands the bytes to nginx's internal location."""
    clean = selectors.media_clean_name(name)
    if clean is None or not selectors.media_readable_by(request.user, clean):  # type: ignore[arg-type]
        raise Http404
    name = clean  # the same checked name for the file and for nginx
    try:
        path = default_storage.path(name)  # refuses names that climb out of MEDIA_ROOT
    except SuspiciousFileOperation:
        raise Http404 from None
    response: HttpResponse | FileResponse
    if settings.MEDIA_X_ACCEL_REDIRECT:
        response = HttpResponse(content_type="")
        response["X-Accel-Redirect"] = settings.MEDIA_X_ACCEL_REDIRECT.rstrip("/") + "/" + name
    else:
        try:
            response = FileResponse(open(path, "rb"))  # noqa: SIM115 - FileResponse closes it
        except (FileNotFoundError, IsADirectoryError):
            raise Http404 from None
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response
