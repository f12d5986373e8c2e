"""Privacy pages: what we hold about you, export, deletion request by email."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from realtime.errors import ServiceError

from . import selectors, services
from .forms import DeletionRequestForm
from .models import DataExport


@login_required
def my_data(request: HttpRequest) -> HttpResponse:
    user = request.user
    return render(
        request,
        "privacy/my_data.html",
        {
            "sections": selectors.held_about(user),  # type: ignore[arg-type]
            "exports": selectors.exports_of(user),  # type: ignore[arg-type]
            "rows_shown": selectors.OVERVIEW_ROWS,
            "link_hours": settings.PRIVACY_EXPORT_LINK_HOURS,
            "interval_hours": settings.PRIVACY_EXPORT_MIN_INTERVAL_HOURS,
            "grace_days": settings.ACCOUNT_DELETION_GRACE_DAYS,
        },
    )


@login_required
@require_POST
def export_request(request: HttpRequest) -> HttpResponse:
    try:
        services.data_export_request(user=request.user)  # type: ignore[arg-type]
    except ServiceError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, "Your export is being built; the link appears here.")
    return redirect(reverse("privacy:my_data") + "#export")


def _export_json(export: DataExport) -> dict[str, object]:
    return {
        "id": export.pk,
        "status": export.status,
        "status_label": export.get_status_display(),
        "percent": export.percent,
        "done": export.steps_done,
        "total": export.steps_total,
        "download_url": reverse("privacy:export_download", args=[export.token])
        if export.status == DataExport.Status.READY
        else None,
        "expires_at": export.expires_at.isoformat() if export.expires_at else None,
    }


def export_status(request: HttpRequest, pk: int) -> JsonResponse:
    # A JSON endpoint: 401 rather than a redirect to the login page.
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not logged in"}, status=401)
    export = DataExport.objects.filter(pk=pk, user=request.user).first()  # type: ignore[misc]
    if export is None:
        return JsonResponse({"error": "no such export"}, status=404)
    return JsonResponse(_export_json(export))


@login_required
def export_download(request: HttpRequest, token: str) -> HttpResponse | FileResponse:
    export = selectors.export_downloadable(user=request.user, token=token)  # type: ignore[arg-type]
    if export is None:
        if DataExport.objects.filter(user=request.user, token=token).exists():  # type: ignore[misc]
            return render(request, "privacy/export_gone.html", status=410)
        raise Http404
    try:
        handle = export.file.open("rb")
    except FileNotFoundError:
        raise Http404 from None
    response = FileResponse(
        handle, as_attachment=True, filename=f"my-data-{export.created_at:%Y-%m-%d}.zip"
    )
    response["Cache-Control"] = "private, no-store"
    return response


def deletion_request(request: HttpRequest) -> HttpResponse:
    """For people who cannot log in: the request is confirmed from the account's email."""
    form = DeletionRequestForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.deletion_request_create(
                email=form.cleaned_data["email"],
                message=form.cleaned_data["message"],
                confirm_url=lambda token: request.build_absolute_uri(
                    reverse("privacy:deletion_confirm", args=[token])
                ),
                client_ip=request.META.get("REMOTE_ADDR"),
            )
        except ServiceError as exc:
            form.add_error(None, exc.detail)
    if request.method == "POST" and form.is_valid():
        return render(
            request,
            "privacy/deletion_request_sent.html",
            {"email": form.cleaned_data["email"], "hours": settings.PRIVACY_DELETION_CONFIRM_HOURS},
        )
    return render(
        request,
        "privacy/deletion_request.html",
        {"form": form, "grace_days": settings.ACCOUNT_DELETION_GRACE_DAYS},
    )


def deletion_confirm(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a button (mail scanners open links; only a person presses it); POST
    confirms."""
    if request.method == "POST":
        try:
            services.deletion_request_confirm(token=token)
        except ServiceError as exc:
            return render(
                request, "privacy/deletion_confirm.html", {"error": exc.detail}, status=404
            )
        return render(
            request,
            "privacy/deletion_confirm.html",
            {"done": True, "grace_days": settings.ACCOUNT_DELETION_GRACE_DAYS},
        )
    pending = services.deletion_request_pending(token=token)
    if pending is None:
        return render(
            request,
            "privacy/deletion_confirm.html",
            {"error": "This link is not valid: it has expired or was already used."},
            status=404,
        )
    return render(
        request,
        "privacy/deletion_confirm.html",
        {"email": pending.email, "grace_days": settings.ACCOUNT_DELETION_GRACE_DAYS},
    )
