from django.apps import AppConfig
from django.db.backends.signals import connection_created


class CoreConfig(AppConfig):
    name = "reviewqueue.core"
    label = "core"
    verbose_name = "Agents and steps"

    def ready(self) -> None:
        from reviewqueue.core.fields import json_as_text

        connection_created.connect(json_as_text, dispatch_uid="reviewqueue.core.json_as_text")
