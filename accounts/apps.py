from allauth.account.apps import AccountConfig as AllauthAccountConfig
from allauth.mfa.apps import MFAConfig as AllauthMFAConfig
from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps

# The staff console names each section once. "Accounts" was both ours (users) and allauth's
# (sign-in email addresses), beside billing's accounts (balances): each now says what it holds.


class AccountsConfig(AppConfig):
    default = True
    name = "accounts"
    verbose_name = "Users"

    def ready(self):
        from accounts import signals  # noqa: F401 (registers the receivers)


class StaffAdminConfig(admin_apps.AdminConfig):
    """Django admin, served by the staff site (allauth sign-in, second factor)."""

    default = False
    default_site = "accounts.staff.StaffSite"


class SignInEmailsConfig(AllauthAccountConfig):
    """allauth's accounts app, as the staff console names it."""

    default = False
    verbose_name = "Sign-in: email addresses"


class SignInTwoFactorConfig(AllauthMFAConfig):
    """allauth's MFA app, as the staff console names it."""

    default = False
    verbose_name = "Sign-in: two-factor"
