from django.apps import AppConfig


class RelayConfig(AppConfig):
    name = "relay"
    verbose_name = "Gateway"

    def ready(self) -> None:
        from relay import checks, signals  # noqa: F401 (they register themselves)
