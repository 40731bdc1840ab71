from django.apps import AppConfig


class EvalsConfig(AppConfig):
    name = "evals"
    verbose_name = "Evals and datasets"

    def ready(self) -> None:
        from evals import receivers  # noqa: F401 - connects the receivers
