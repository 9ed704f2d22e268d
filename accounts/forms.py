import zoneinfo

from django import forms

from accounts.models import User, time_zone_choices


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
