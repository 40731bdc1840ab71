from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "reviewqueue.core"
    label = "core"
    verbose_name = "Agents and steps"
