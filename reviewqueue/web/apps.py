from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "reviewqueue.web"
    label = "web"
    verbose_name = "Reviewer UI"
