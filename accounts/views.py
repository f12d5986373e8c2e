from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from pydantic import ValidationError

from . import selectors, services
from .forms import ProfileForm
from .schemas import DeviceIn


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


@login_required
def profile_edit(request: HttpRequest) -> HttpResponse:
    profile = selectors.profile_of(request.user)  # type: ignore[arg-type]
    form = ProfileForm(request.POST or None, request.FILES or None, instance=profile)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Profile saved.")
        return redirect("profile_edit")
    return render(request, "accounts/profile_edit.html", {"form": form})


@login_required
def devices(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "accounts/devices.html",
        {"devices": selectors.devices_of(request.user)},  # type: ignore[arg-type]
    )


@login_required
@require_POST
def device_register(request: HttpRequest) -> JsonResponse:
    try:
        data = DeviceIn.model_validate_json(request.body)
    except ValidationError:
        return JsonResponse({"error": "invalid device description"}, status=400)
    device = services.device_register(user=request.user, **data.model_dump())  # type: ignore[arg-type]
    return JsonResponse({"id": device.pk})
