from allauth.mfa.models import Authenticator
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from accounts.forms import ProfileForm


@login_required
def profile(request):
    form = ProfileForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Profile saved.")
        return redirect("accounts:profile")
    mfa_types = set(Authenticator.objects.filter(user=request.user).values_list("type", flat=True))
    return render(
        request,
        "accounts/profile.html",
        {
            "form": form,
            "totp_enabled": Authenticator.Type.TOTP in mfa_types,
            "recovery_codes_enabled": Authenticator.Type.RECOVERY_CODES in mfa_types,
        },
    )
