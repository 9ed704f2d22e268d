import zoneinfo

from allauth.account import forms as allauth_forms
from django import forms

from accounts.models import NotificationSettings, User, time_zone_choices
from console.lib.money import MAX_DOLLARS, AmountError, dollars_to_micros, format_dollars_plain


class ProfileForm(forms.ModelForm):
    time_zone = forms.ChoiceField(
        choices=time_zone_choices,
        help_text="Dashboards, logs and emails show times in this zone.",
    )

    class Meta:
        model = User
        fields = ["name", "time_zone"]
        help_texts = {"name": "How we address you in emails and support replies. Optional."}

    def clean_time_zone(self):
        value = self.cleaned_data["time_zone"]
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise forms.ValidationError("Choose a time zone from the list.") from None
        return value


class NotificationForm(forms.ModelForm):
    price_vendors = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Vendors"
    )
    price_models = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Models"
    )
    low_balance_threshold_usd = forms.CharField(
        label="Alert me below (USD)",
        required=False,
        widget=forms.TextInput(attrs={"inputmode": "decimal"}),
    )

    class Meta:
        model = NotificationSettings
        fields = [
            "price_emails",
            "price_scope",
            "price_vendors",
            "price_models",
            "maintenance_emails",
            "low_balance_emails",
            "security_emails",
        ]
        labels = {
            "price_emails": "Price changes",
            "price_scope": "About",
            "maintenance_emails": "Maintenance notices",
            "low_balance_emails": "Low-balance alert",
            "security_emails": (
                "Security notices (new token, rotated key, sign-in from a new address)"
            ),
        }
        widgets = {"price_scope": forms.RadioSelect}

    def __init__(self, *args, catalog, **kwargs):
        """`catalog`: the (vendor, model) pairs on sale, which a user may follow."""
        super().__init__(*args, **kwargs)
        vendors = sorted({vendor for vendor, _model in catalog})
        self.fields["price_vendors"].choices = [(v, v) for v in vendors]
        self.fields["price_models"].choices = [(m, m) for m in sorted(m for _v, m in catalog)]
        self.initial["low_balance_threshold_usd"] = format_dollars_plain(
            self.instance.low_balance_threshold
        )

    def clean_low_balance_threshold_usd(self):
        raw = self.cleaned_data["low_balance_threshold_usd"] or "0"
        try:
            value = dollars_to_micros(raw)
        except AmountError as error:
            message = {
                "too_large": f"Enter an amount below ${MAX_DOLLARS:,}.",
                "too_small": "The threshold cannot be negative.",
            }.get(error.code, "Enter an amount in dollars, such as 5.")
            raise forms.ValidationError(message) from None
        if value < 0:
            raise forms.ValidationError("The threshold cannot be negative.")
        if self.cleaned_data.get("low_balance_emails") and value == 0:
            raise forms.ValidationError("Choose a threshold above zero for the alert.")
        return value

    def clean(self):
        cleaned = super().clean()
        chosen = cleaned.get("price_vendors") or cleaned.get("price_models")
        if (
            cleaned.get("price_emails")
            and cleaned.get("price_scope") == NotificationSettings.PriceScope.CHOSEN
            and not chosen
        ):
            self.add_error("price_vendors", "Choose at least one vendor or model, or every model.")
        return cleaned

    def save(self, commit=True):
        prefs = super().save(commit=False)
        threshold = self.cleaned_data["low_balance_threshold_usd"]
        new_threshold = threshold != prefs.low_balance_threshold
        prefs.low_balance_threshold = threshold
        if commit:
            prefs.save()
            if new_threshold:  # a new threshold starts afresh
                type(prefs).objects.filter(pk=prefs.pk).update(low_balance_alerted=False)
        return prefs


# django-allauth's forms, with labels and placeholders in sentence case like the rest of the
# site (ACCOUNT_FORMS in settings names them).


def _relabel(form, labels):
    for name, label in labels.items():
        if name in form.fields:
            form.fields[name].label = label
            if "placeholder" in form.fields[name].widget.attrs:
                form.fields[name].widget.attrs["placeholder"] = label


class LoginForm(allauth_forms.LoginForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _relabel(self, {"remember": "Remember me"})


class ChangePasswordForm(allauth_forms.ChangePasswordForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _relabel(
            self,
            {
                "oldpassword": "Current password",
                "password1": "New password",
                "password2": "New password (again)",
            },
        )


class ResetPasswordKeyForm(allauth_forms.ResetPasswordKeyForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _relabel(self, {"password1": "New password", "password2": "New password (again)"})
