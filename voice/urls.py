from django.urls import path

from . import views

app_name = "voice"
urlpatterns = [
    path("", views.page, name="page"),
    path("api/channels/", views.channels, name="channels"),
    path("api/identity/", views.identity, name="identity"),
]
