"""Provider webhooks: verify the delivery, record it once, answer at once. The work (refetch
the purchase, grant or revoke) runs in Celery (tasks.provider_event_process)."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import services
from .models import Provider
from .providers import google_play_api, paypal_api, stripe_api
from .providers.state import VerifiedEvent, WebhookRefused

log = logging.getLogger(__name__)


def _accept(provider: str, event: VerifiedEvent) -> HttpResponse:
    row = services.provider_event_record(provider=provider, event=event)
    return JsonResponse({"received": True, "duplicate": row is None})


def _refuse(provider: str, exc: WebhookRefused) -> HttpResponse:
    log.warning("%s webhook refused: %s", provider, exc)
    return JsonResponse({"error": "refused", "detail": str(exc)}, status=400)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    try:
        event = stripe_api.webhook_verify(
            payload=request.body, signature=request.headers.get("Stripe-Signature", "")
        )
    except WebhookRefused as exc:
        return _refuse(Provider.STRIPE, exc)
    return _accept(Provider.STRIPE, event)


@csrf_exempt
@require_POST
def paypal_webhook(request: HttpRequest) -> HttpResponse:
    headers = {k.upper(): v for k, v in request.headers.items()}
    try:
        event = paypal_api.webhook_verify(payload=request.body, headers=headers)
    except WebhookRefused as exc:
        return _refuse(Provider.PAYPAL, exc)
    return _accept(Provider.PAYPAL, event)


@csrf_exempt
@require_POST
def google_play_webhook(request: HttpRequest) -> HttpResponse:
    """Real-time developer notifications, pushed by Pub/Sub with an OIDC token."""
    try:
        event = google_play_api.webhook_verify(
            payload=request.body, authorization=request.headers.get("Authorization", "")
        )
    except WebhookRefused as exc:
        return _refuse(Provider.GOOGLE_PLAY, exc)
    return _accept(Provider.GOOGLE_PLAY, event)
