from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "reviewqueue.review"
    label = "review"
    verbose_name = "Review queues"
