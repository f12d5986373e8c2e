from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments"

    def ready(self) -> None:
        # tasks: registered with Celery here, so services can start them by name (realtime.jobs).
        from . import privacy, tasks  # noqa: F401

        privacy.register()
