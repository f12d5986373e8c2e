from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from allauth.account import signals as allauth_signals
        from django.contrib.auth.signals import user_logged_in, user_logged_out
        from django.db.models.signals import post_save

        from realtime import hooks

        # tasks: registered with Celery here, so services can start them by name (realtime.jobs).
        from . import receivers, selectors, tasks  # noqa: F401
        from .models import User
        from .privacy import accounts_step, cookies

        accounts_step.register()
        user_logged_out.connect(
            cookies.mark_logged_out, weak=False, dispatch_uid="accounts.privacy.cookies"
        )
        user_logged_in.connect(receivers.logged_in, dispatch_uid="accounts.device_issue")
        user_logged_out.connect(receivers.logged_out, dispatch_uid="accounts.session_end")
        post_save.connect(receivers.user_saved, sender=User, dispatch_uid="accounts.user_saved")
        for signal in (
            allauth_signals.password_changed,
            allauth_signals.password_set,
            allauth_signals.password_reset,
        ):
            signal.connect(
                receivers.password_changed_here, dispatch_uid=f"accounts.pw.{id(signal)}"
            )
        # realtime/ sits below accounts/: it asks about online-status privacy through hooks.
        hooks.register_presence(
            shows_online=selectors.shows_online_status_of,
            hidden_among=selectors.hidden_presence_ids,
        )
