from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from realtime.services import user_sockets_close

        from .privacy import accounts_step, cookies

        def close_sockets(sender, request, user, **kwargs):  # type: ignore[no-untyped-def]
            # Logging out anywhere (allauth, admin) closes the user's open sockets.
            if user is not None:
                user_sockets_close(user_id=user.pk)

        user_logged_out.connect(close_sockets, weak=False, dispatch_uid="accounts.close_sockets")
        accounts_step.register()
        user_logged_out.connect(
            cookies.mark_logged_out, weak=False, dispatch_uid="accounts.privacy.cookies"
        )
