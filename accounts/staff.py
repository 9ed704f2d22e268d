"""The staff console (Django admin) behind the same sign-in as everyone: allauth's, with its
second factor and its rate limits. Django's own admin login form is never shown."""

from allauth.account.authentication import get_authentication_records
from allauth.mfa.models import Authenticator
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme


def has_second_factor(user):
    return Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()


def passed_second_factor(request):
    """This session's sign-in included an authenticator code (allauth records each step)."""
    records = get_authentication_records(request, request.user)
    return any(record.get("method") == "mfa" for record in records)


def staff_may_enter(request):
    user = request.user
    if not (user.is_active and user.is_staff):
        return False
    if not settings.STAFF_MFA_REQUIRED:
        return True
    return has_second_factor(user) and passed_second_factor(request)


class StaffSite(admin.AdminSite):
    def has_permission(self, request):
        return staff_may_enter(request)

    def login(self, request, extra_context=None):
        """Send each visitor to the step they are missing, then back where they were going."""
        next_url = request.GET.get(REDIRECT_FIELD_NAME, "")
        if not url_has_allowed_host_and_scheme(
            next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            next_url = reverse("admin:index", current_app=self.name)
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(next_url, reverse("account_login"))
        if not (user.is_active and user.is_staff):
            raise PermissionDenied("This account is not a staff account.")
        if settings.STAFF_MFA_REQUIRED and not has_second_factor(user):
            messages.info(
                request,
                "The staff console needs two-factor sign-in. Set up an authenticator app, "
                "then open the staff console again.",
            )
            return redirect("mfa_activate_totp")
        if settings.STAFF_MFA_REQUIRED and not passed_second_factor(request):
            return redirect_to_login(next_url, reverse("mfa_reauthenticate"))
        return redirect(next_url)

    def password_change(self, request, extra_context=None):
        # allauth's form, with its rate limit and its notification.
        return redirect("account_change_password")
