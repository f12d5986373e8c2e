"""Video chat pages: the chat page itself (or why it is refused), reports, appeals and the
chat settings. The chat runs over /ws/videochat/; nothing of it passes through here."""

from __future__ import annotations

import math

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.selectors import meets_age_rule, profile_of
from realtime.errors import ServiceError
from realtime.ratelimit import allow_async

from . import geo, matching, selectors, services, translation
from .forms import AppealForm, ChatSettingsForm, ReportForm
from .keys import report_rate_key
from .models import Ban, Report, ReportReason


def index(request: HttpRequest) -> HttpResponse:
    """/videochat/. Renders, by the user's situation:

    - not signed in: videochat/login.html {next, providers: [(id, name)]};
    - under 18 (or no birth date): videochat/age_restricted.html, status 403;
    - banned (this account or its Facebook/VK id): videochat/banned.html, status 403,
      {ban, appeal (the open one or None), appeal_form, seconds_left};
    - otherwise videochat/index.html with this context, kept stable for the client:
        filters_allowed  bool: the user holds the paid gender/country filters
        me_country       geo.Country from the request IP; str() is the ISO-2 code or ""
                         (.code, .name, .flag)
        profile          accounts Profile (gender, language, translation_target, nickname)
        settings_form    ChatSettingsForm posting to videochat:settings
        report_reasons   [(value, label)] for the report dialog
    ICE servers and everything live come over the socket (`ready`).
    """
    user = request.user
    if not user.is_authenticated:
        return render(request, "videochat/login.html", {"next": request.get_full_path()})
    if not meets_age_rule(user, "videochat"):  # type: ignore[arg-type]
        return render(request, "videochat/age_restricted.html", status=403)
    ban = selectors.active_ban_for(user)  # type: ignore[arg-type]
    if ban is not None:
        return _banned_page(request, ban, AppealForm(), status=403)
    profile = profile_of(user)  # type: ignore[arg-type]
    context = {
        "filters_allowed": selectors.filters_allowed(user_id=user.pk),
        "me_country": geo.country_info(geo.country_of_ip(geo.request_client_ip(request))),
        "profile": profile,
        "settings_form": ChatSettingsForm(
            initial={
                "gender": profile.gender,
                "language": profile.language,
                "translation_target": profile.translation_target,
            }
        ),
        "report_reasons": ReportReason.choices,
        # With no translation backend the option is shown as unavailable, not left silent.
        "translation_available": translation.is_available(),
    }
    return render(request, "videochat/index.html", context)


@login_required
@require_POST
def chat_settings(request: HttpRequest) -> HttpResponse:
    """Save gender, language and translation target on the profile (form or fetch)."""
    form = ChatSettingsForm(request.POST)
    wants_json = "application/json" in request.headers.get("Accept", "")
    if not form.is_valid():
        if wants_json:
            return JsonResponse({"ok": False, "errors": form.errors}, status=400)
        messages.error(request, "Those settings could not be saved.")
        return redirect("videochat:index")
    services.chat_settings_update(user=request.user, **form.cleaned_data)  # type: ignore[arg-type]
    if wants_json:
        return JsonResponse({"ok": True})
    messages.success(request, "Settings saved.")
    return redirect("videochat:index")


@login_required
@require_POST
def appeal(request: HttpRequest) -> HttpResponse:
    ban = selectors.active_ban_for(request.user)  # type: ignore[arg-type]
    if ban is None:
        return redirect("videochat:index")
    form = AppealForm(request.POST)
    if form.is_valid():
        try:
            services.appeal_create(user=request.user, ban=ban, text=form.cleaned_data["text"])  # type: ignore[arg-type]
        except ServiceError as exc:
            messages.error(request, exc.detail)
        else:
            messages.success(request, "Your appeal was sent. A moderator will review it.")
        return redirect("videochat:index")
    return _banned_page(request, ban, form, status=400)


def _banned_page(request: HttpRequest, ban: Ban, form: AppealForm, *, status: int) -> HttpResponse:
    # The countdown starts from the server's clock: the browser's may be off.
    seconds_left = math.ceil((ban.expires_at - timezone.now()).total_seconds())
    context = {
        "ban": ban,
        "appeal": selectors.open_appeal(ban),
        "appeal_form": form,
        "seconds_left": max(seconds_left, 1),
    }
    return render(request, "videochat/banned.html", context, status=status)


async def report(request: HttpRequest) -> HttpResponse:
    """POST /videochat/report/ (multipart: reason, chat_lines JSON, frame). About the current
    partner, else the last one: matchmaking knows who that is, the client never says."""
    if request.method != "POST":
        return JsonResponse({"ok": False, "error": "method_not_allowed"}, status=405)
    user = await request.auser()
    if not user.is_authenticated:
        return JsonResponse({"ok": False, "error": "login_required"}, status=401)
    per_hour = settings.VIDEOCHAT_REPORTS_PER_HOUR
    if not await allow_async(
        report_rate_key(user.pk), capacity=per_hour, per_second=per_hour / 3600
    ):
        return JsonResponse({"ok": False, "error": "rate_limited"}, status=429)
    form = ReportForm(request.POST, request.FILES)
    if not form.is_valid():
        return JsonResponse({"ok": False, "error": "invalid", "errors": form.errors}, status=400)
    try:
        created = await matching.report_partner(
            reporter=user,  # type: ignore[arg-type]
            reason=form.cleaned_data["reason"],
            chat_lines=form.cleaned_data["chat_lines"],
            frame=form.cleaned_data["frame"],
        )
    except ServiceError as exc:
        return JsonResponse(
            {"ok": False, "error": exc.code, "detail": exc.detail}, status=exc.status
        )
    return JsonResponse({"ok": True, "report_id": created.pk}, status=201)


@staff_member_required
def evidence(request: HttpRequest, kind: str, pk: int) -> HttpResponseBase:
    """A report still or ban image, for staff only: evidence is never public media."""
    if kind == "report":
        field = get_object_or_404(Report, pk=pk).frame
    elif kind == "ban":
        field = get_object_or_404(Ban, pk=pk).image
    else:
        raise Http404
    if not field:
        raise Http404
    response = FileResponse(field.open("rb"))
    response["Cache-Control"] = "private, no-store"
    return response
