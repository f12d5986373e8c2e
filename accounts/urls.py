from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("profile/", views.profile_edit, name="profile_edit"),
    path("profile/birth-date/", views.birth_date, name="birth_date"),
    path("profile/birth-date/change/", views.birth_date_change, name="birth_date_change"),
    path("profile/delete/", views.account_delete, name="account_delete"),
    path("devices/", views.devices, name="devices"),
    path("devices/current/", views.device_describe, name="device_describe"),
    path("devices/<int:pk>/forget/", views.device_forget, name="device_forget"),
    path("devices/sign-out-everywhere/", views.sessions_end_all, name="sessions_end_all"),
]
