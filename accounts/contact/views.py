from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from realtime.errors import ServiceError

from . import services
from .forms import ContactForm


def contact(request: HttpRequest) -> HttpResponse:
    user = request.user if request.user.is_authenticated else None
    initial = {"email": getattr(user, "email", "") or "", "topic": request.GET.get("topic", "")}
    form = ContactForm(request.POST or None, request.FILES or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.contact_message_create(
                user=user,  # type: ignore[arg-type]
                name=form.cleaned_data["name"],
                email=form.cleaned_data["email"],
                topic=form.cleaned_data["topic"],
                message=form.cleaned_data["message"],
                files=form.cleaned_data["attachments"],
                client_ip=request.META.get("REMOTE_ADDR"),
            )
        except ValidationError as exc:
            form.add_error("attachments", exc)
        except ServiceError as exc:
            form.add_error(None, exc.detail)
        else:
            return render(request, "contact/sent.html", {"email": form.cleaned_data["email"]})
    status = 400 if form.errors else 200
    return render(
        request,
        "contact/form.html",
        {"form": form, "retention_days": settings.CONTACT_RETENTION_DAYS},
        status=status,
    )
