from django.urls import path

from . import views, webhooks

app_name = "payments"
urlpatterns = [
    path("", views.plans, name="plans"),
    path("checkout/", views.checkout, name="checkout"),
    path("purchases/", views.purchases, name="purchases"),
    path("purchases/<int:pk>/cancel/", views.renewal_cancel, name="renewal_cancel"),
    path("paypal/return/", views.paypal_return, name="paypal_return"),
    path("webhooks/stripe/", webhooks.stripe_webhook, name="webhook_stripe"),
    path("webhooks/paypal/", webhooks.paypal_webhook, name="webhook_paypal"),
    path("webhooks/google-play/", webhooks.google_play_webhook, name="webhook_google_play"),
    path("google-play/account/", views.google_play_account, name="google_play_account"),
]
