from django.apps import AppConfig


class VideochatConfig(AppConfig):
    name = "videochat"
    verbose_name = "Video Chat Alternative"

    def ready(self) -> None:
        from . import privacy

        privacy.register()
