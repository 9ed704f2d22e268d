from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class AccountsConfig(AppConfig):
    default = True
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self):
        from accounts import signals  # noqa: F401 (registers the receivers)


class StaffAdminConfig(admin_apps.AdminConfig):
    """Django admin, served by the staff site (allauth sign-in, second factor)."""

    default = False
    default_site = "accounts.staff.StaffSite"
