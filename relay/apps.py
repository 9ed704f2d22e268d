from django.apps import AppConfig


class RelayConfig(AppConfig):
    name = "relay"
    verbose_name = "Gateway"

    def ready(self):
        from relay import checks, signals  # noqa: F401 (they register themselves)
