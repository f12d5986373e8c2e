from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("profile/", views.profile_edit, name="profile_edit"),
    path("devices/", views.devices, name="devices"),
    path("devices/register/", views.device_register, name="device_register"),
]
