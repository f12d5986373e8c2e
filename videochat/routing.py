from django.urls import path

from .consumers import VideochatConsumer

websocket_urlpatterns = [
    path("ws/videochat/", VideochatConsumer.as_asgi()),
]
