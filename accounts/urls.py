from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("profile/", views.profile_edit, name="profile_edit"),
    path("profile/birth-date/", views.birth_date, name="birth_date"),
    path("profile/birth-date/change/", views.birth_date_change, name="birth_date_change"),
    path("profile/delete/", views.account_delete, name="account_delete"),
    path("devices/", views.devices, name="devices"),
    path("devices/register/", views.device_register, name="device_register"),
    path("devices/<int:pk>/forget/", views.device_forget, name="device_forget"),
]
