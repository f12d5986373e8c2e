from django.apps import AppConfig


class VoiceConfig(AppConfig):
    name = "voice"
    verbose_name = "CBLINE"

    def ready(self) -> None:
        from . import (
            privacy,
            signals,  # noqa: F401  (connects the receivers)
        )

        privacy.register()
