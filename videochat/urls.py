app_name = "videochat"
urlpatterns: list = []
