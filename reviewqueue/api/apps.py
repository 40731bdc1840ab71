from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "reviewqueue.api"
    label = "api"
    verbose_name = "API"
