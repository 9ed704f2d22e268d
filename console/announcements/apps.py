from django.apps import AppConfig


class AnnouncementsConfig(AppConfig):
    name = "console.announcements"
    label = "announcements"
    verbose_name = "Announcements"

    def ready(self):
        from console.announcements import signals  # noqa: F401 (registers the receivers)
