from django.urls import path

from . import views

app_name = "privacy"

urlpatterns = [
    path("my-data/", views.my_data, name="my_data"),
    path("export/", views.export_request, name="export_request"),
    path("export/<int:pk>/status/", views.export_status, name="export_status"),
    path("export/download/<str:token>/", views.export_download, name="export_download"),
    path("delete-request/", views.deletion_request, name="deletion_request"),
    path("delete-request/confirm/<str:token>/", views.deletion_confirm, name="deletion_confirm"),
]
