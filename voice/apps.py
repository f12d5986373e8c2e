from django.apps import AppConfig


class VoiceConfig(AppConfig):
    name = "voice"
    verbose_name = "CBLINE"

    def ready(self) -> None:
        from realtime import liveness

        from . import (
            privacy,
            services,
            signals,  # noqa: F401  (connects the receivers)
        )

        privacy.register()
        liveness.on_process_dead(services.process_dead_release)
