from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "reviewqueue.routing"
    label = "routing"
    verbose_name = "Routing rules"
