from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = "CallsApp"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from accounts.models import Device
        from realtime import hooks
        from realtime.stream import register_ack_statement, register_renderer, register_trim_hook

        from . import privacy, selectors, services

        register_renderer(selectors.EVENT_KIND, selectors.render_stream_items)
        register_renderer(selectors.SYNC_KIND, selectors.render_stream_items)
        register_trim_hook(selectors.EVENT_KIND, services.events_trimmed)
        register_ack_statement(selectors.EVENT_KIND, services.acks_settle)
        privacy.register()
        # Presence is for contacts nobody blocked; realtime/ asks through its hook.
        hooks.register_presence_audience(may_see=selectors.presence_audience)

        # identity's services delete a Device when its session ends (logout, forget, sign out
        # everywhere): its stream goes, and contacts re-read the user's devices.
        def device_gone(sender: type, instance: Device, **kwargs: object) -> None:
            services.device_removed(user_id=instance.user_id, device_pk=instance.pk)

        post_delete.connect(device_gone, sender=Device, weak=False, dispatch_uid="messaging.device")
