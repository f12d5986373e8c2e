from django.urls import path

from . import views

app_name = "videochat"
urlpatterns = [
    path("", views.index, name="index"),
    path("report/", views.report, name="report"),
    path("appeal/", views.appeal, name="appeal"),
    path("settings/", views.chat_settings, name="settings"),
    path("evidence/<str:kind>/<int:pk>/", views.evidence, name="evidence"),
]
