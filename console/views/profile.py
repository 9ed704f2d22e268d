"""The profile page: the user's details and email preferences.

A site page rather than an accounts view because the preferences offer the models on sale,
which billing knows and accounts, below it, does not.
"""

from allauth.mfa.models import Authenticator
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.forms import NotificationForm, ProfileForm
from accounts.models import NotificationSettings
from billing.models import ModelPrice


def _notification_form(request, data=None):
    catalog = ModelPrice.objects.filter(enabled=True).values_list("vendor", "model")
    return NotificationForm(
        data, instance=NotificationSettings.of(request.user), catalog=list(catalog)
    )


@login_required
def profile(request):
    form = ProfileForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Profile saved.")
        return redirect("console:profile")
    return _profile_page(request, form, _notification_form(request))


@login_required
@require_POST
def notifications(request):
    notification_form = _notification_form(request, request.POST)
    if notification_form.is_valid():
        notification_form.save()
        messages.success(request, "Email preferences saved.")
        return redirect(reverse("console:profile") + "#notifications")
    return _profile_page(request, ProfileForm(instance=request.user), notification_form)


def _profile_page(request, form, notification_form):
    mfa_types = set(Authenticator.objects.filter(user=request.user).values_list("type", flat=True))
    return render(
        request,
        "accounts/profile.html",
        {
            "form": form,
            "notification_form": notification_form,
            "totp_enabled": Authenticator.Type.TOTP in mfa_types,
            "recovery_codes_enabled": Authenticator.Type.RECOVERY_CODES in mfa_types,
        },
    )
