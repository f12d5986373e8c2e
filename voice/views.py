"""Thin HTTP for CBLINE: the page, and the small JSON endpoints its controller calls."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.selectors import profile_of
from realtime.errors import ServiceError

from . import selectors, services
from .forms import ChannelCreateForm, IdentityForm
from .models import Channel


def _channel_json(channel: Channel, member_ids: set[int]) -> dict[str, Any]:
    return {
        "id": channel.pk,
        "name": channel.name,
        "description": channel.description,
        "range_km": channel.range_km,
        "is_protected": channel.is_protected,
        "is_member": channel.pk in member_ids,
    }


def _form_error(form: Any) -> JsonResponse:
    detail = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
    return JsonResponse({"code": "invalid", "detail": detail}, status=400)


def _service_error(exc: ServiceError) -> JsonResponse:
    return JsonResponse({"code": exc.code, "detail": exc.detail}, status=exc.status)


@login_required
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    profile = profile_of(request.user)  # type: ignore[arg-type]
    return render(
        request,
        "voice/index.html",
        {
            "profile": profile,
            "audio_ttl": settings.VOICE_AUDIO_TTL_SECONDS,
            "max_seconds": settings.VOICE_MAX_TRANSMISSION_SECONDS,
            "location_ttl": settings.VOICE_LOCATION_TTL_SECONDS,
            "min_range_km": services.MIN_RANGE_KM,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def channels(request: HttpRequest) -> JsonResponse:
    """GET ?q= lists/searches channels by name; POST creates one."""
    user = request.user
    if request.method == "POST":
        form = ChannelCreateForm(request.POST)
        if not form.is_valid():
            return _form_error(form)
        try:
            channel = services.channel_create(
                creator=user,  # type: ignore[arg-type]
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                password=form.cleaned_data["password"],
                range_km=form.cleaned_data["range_km"] or 0,
            )
        except ServiceError as exc:
            return _service_error(exc)
        return JsonResponse({"channel": _channel_json(channel, {channel.pk})}, status=201)
    found = selectors.channels_search(request.GET.get("q", "")[:64])
    member_ids = selectors.member_channel_ids(user.pk or 0, [c.pk for c in found])
    return JsonResponse({"channels": [_channel_json(c, member_ids) for c in found]})


@login_required
@require_POST
def identity(request: HttpRequest) -> JsonResponse:
    """The CBLINE nickname and description (the account's profile fields)."""
    form = IdentityForm(request.POST)
    if not form.is_valid():
        return _form_error(form)
    try:
        profile = services.identity_update(
            user=request.user,  # type: ignore[arg-type]
            nickname=form.cleaned_data["nickname"],
            description=form.cleaned_data["description"],
        )
    except ServiceError as exc:
        return _service_error(exc)
    return JsonResponse({"nickname": profile.nickname, "description": profile.description})
