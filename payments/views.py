"""Premium pages: the plans (and checkout), the buyer's purchases, renewal cancel."""

from __future__ import annotations

from itertools import groupby

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from realtime.errors import ServiceError

from . import selectors, services
from .forms import CheckoutForm
from .models import Provider
from .providers import google_play_api
from .providers.state import ProviderError


def configured_providers() -> list[tuple[str, str]]:
    """Web checkouts offered: only providers whose credentials are set."""
    offered = []
    if settings.STRIPE_SECRET_KEY:
        offered.append((Provider.STRIPE.value, "Card (Stripe)"))
    if settings.PAYPAL_CLIENT_ID and settings.PAYPAL_CLIENT_SECRET:
        offered.append((Provider.PAYPAL.value, "PayPal"))
    return offered


def plans(request: HttpRequest) -> HttpResponse:
    """/premium/: every product on sale with its prices; a pay button per provider."""
    prices = list(selectors.plans())
    products = [(product, list(group)) for product, group in groupby(prices, lambda p: p.product)]
    held = (
        list(selectors.active_entitlements(user_id=request.user.pk))
        if request.user.is_authenticated
        else []
    )
    context = {
        "products": products,
        "providers": configured_providers(),
        "held_product_ids": {e.product_id for e in held},
        "held": held,
    }
    return render(request, "payments/plans.html", context)


@login_required
@require_POST
def checkout(request: HttpRequest) -> HttpResponse:
    form = CheckoutForm(request.POST, providers=[p for p, _ in configured_providers()])
    if not form.is_valid():
        messages.error(request, "Choose a plan and a way to pay.")
        return redirect("payments:plans")
    purchases_url = request.build_absolute_uri(reverse("payments:purchases"))
    try:
        url = services.checkout_start(
            user=request.user,  # type: ignore[arg-type]
            price_id=form.cleaned_data["price"],
            provider=form.cleaned_data["provider"],
            success_url=purchases_url + "?checkout=done",
            return_url=request.build_absolute_uri(reverse("payments:paypal_return")),
            cancel_url=request.build_absolute_uri(reverse("payments:plans")) + "?checkout=canceled",
        )
    except ServiceError as exc:
        messages.error(request, f"The payment could not be started: {exc.detail}")
        return redirect("payments:plans")
    return redirect(url)


@login_required
def paypal_return(request: HttpRequest) -> HttpResponse:
    """PayPal sends the buyer here after approval (?token=<PayPal order id>)."""
    order = services.paypal_return(
        user=request.user,  # type: ignore[arg-type]
        paypal_order_id=request.GET.get("token", "")[:64],
    )
    if order is not None and order.status == "paid":
        messages.success(request, "Thanks! Premium is on.")
    elif order is not None:
        messages.info(request, "Thanks! Premium turns on as soon as PayPal confirms the payment.")
    return redirect("payments:purchases")


@login_required
def purchases(request: HttpRequest) -> HttpResponse:
    """/premium/purchases/: what the user bought, until when, whether it renews."""
    if request.GET.get("checkout") == "done":
        messages.info(
            request, "Thanks! Your purchase shows here as soon as the payment is confirmed."
        )
    user_id: int = request.user.pk  # type: ignore[assignment]
    context = {
        "orders": selectors.purchases_of(user_id=user_id),
        "held": selectors.active_entitlements(user_id=user_id),
    }
    return render(request, "payments/purchases.html", context)


@login_required
@require_POST
def renewal_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        services.renewal_cancel(user=request.user, order_id=pk)  # type: ignore[arg-type]
    except (ServiceError, ProviderError) as exc:
        messages.error(request, f"Could not cancel: {getattr(exc, 'detail', exc)}")
    else:
        messages.success(request, "Renewal canceled: Premium stays until the paid period ends.")
    return redirect("payments:purchases")


@login_required
def google_play_account(request: HttpRequest) -> HttpResponse:
    """For the Android app: the id it passes to Play as obfuscatedAccountId, by which a
    purchase's notification finds this account."""
    user_id: int = request.user.pk  # type: ignore[assignment]
    return JsonResponse(
        {
            "obfuscated_account_id": google_play_api.account_id_for(user_id),
            "package_name": settings.GOOGLE_PLAY_PACKAGE_NAME,
        }
    )
