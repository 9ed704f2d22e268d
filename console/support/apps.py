from django.apps import AppConfig


class SupportConfig(AppConfig):
    name = "console.support"
    label = "support"
    verbose_name = "Support"
