from django.urls import path

from .consumers import EntitlementsConsumer

websocket_urlpatterns = [
    path("ws/payments/", EntitlementsConsumer.as_asgi()),
]
