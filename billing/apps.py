from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self):
        from billing import checks, signals  # noqa: F401 (they register themselves)
