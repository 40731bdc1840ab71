from django.apps import AppConfig


class HooksConfig(AppConfig):
    """What happens when a step is decided or escalated: agents waiting on a long-poll are woken
    (notify.py) and webhooks are delivered (delivery.py)."""

    name = "reviewqueue.hooks"
    label = "hooks"
    verbose_name = "Webhooks and notifications"

    def ready(self) -> None:
        from reviewqueue.hooks import receivers  # noqa: F401  (connects the signal receivers)
