from django.apps import AppConfig


class VideochatConfig(AppConfig):
    name = "videochat"
    verbose_name = "Video Chat Alternative"

    def ready(self) -> None:
        from realtime import liveness

        from . import matching, privacy

        privacy.register()
        liveness.on_process_dead(matching.process_dead_release)
