from django.apps import AppConfig


class RelayConfig(AppConfig):
    name = "relay"
    verbose_name = "Gateway"

    def ready(self):
        from relay import signals  # noqa: F401 (registers the receivers)
