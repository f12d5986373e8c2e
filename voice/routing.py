from django.urls import path

from .consumers import VoiceConsumer

websocket_urlpatterns = [
    path("ws/cbline/", VoiceConsumer.as_asgi()),
]
