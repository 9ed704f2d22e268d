import ipaddress

from django import forms
from django.utils import timezone

from billing.forms import AmountField
from billing.models import Line, ModelPrice
from console.lib.fields import DateTimeInRangeField
from console.lib.money import format_dollars_plain
from tokens.models import Token


class LineChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, line):
        text = f"{line.name} — price ×{line.multiplier.normalize():f}"
        return f"{text} · {line.description}" if line.description else text


def quota_limit_field(help_text="The most this token may spend in total."):
    return AmountField(
        required=False,
        cents_only=False,
        maximum=1_000_000 * 1_000_000,
        label="Quota limit (USD)",
        help_text=help_text,
    )


class TokenForm(forms.ModelForm):
    """Create and edit a token. Restrictions are optional and sit under "Advanced"."""

    quota_limit_usd = quota_limit_field()
    line = LineChoiceField(
        queryset=Line.objects.none(),
        empty_label=None,
        label="Line",
        help_text="The route class this token calls through; the price is multiplied by it.",
    )
    allowed_models = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Allowed models",
        help_text="Leave all unticked to allow every model of the line.",
        error_messages={
            "invalid_choice": "“%(value)s” is not a model we serve; pick from the list."
        },
    )
    ip_allowlist = forms.CharField(
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 3, "placeholder": "203.0.113.7\n10.0.0.0/8\n2001:db8::/32"}
        ),
        label="IP allowlist",
        help_text="One address or CIDR range per line (IPv4 or IPv6). Empty means any address.",
    )
    expires_at = DateTimeInRangeField(
        required=False,
        error_messages={
            "out_of_range": "Choose an expiry before 2100, or leave it empty for a key that "
            "never expires."
        },
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        label="Expires",
        help_text="Optional, in your time zone. After this the key stops working.",
    )

    class Meta:
        model = Token
        fields = ["name", "unlimited_quota", "line", "expires_at"]
        labels = {"unlimited_quota": "Unlimited quota"}
        help_texts = {
            "name": "What the key is for, e.g. “production backend”. It shows in your logs.",
            "unlimited_quota": (
                "On: the token spends your balance alone. Off: it also stops at its own limit, "
                "even with money on the account. Quota and balance are independent."
            ),
        }
        widgets = {"name": forms.TextInput(attrs={"autocomplete": "off", "maxlength": 100})}

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        lines = Line.available_to(user)
        if self.instance.pk and self.instance.line_id:
            # A line the user lost stays selectable only until the token is moved off it.
            lines = lines | Line.objects.filter(pk=self.instance.line_id)
        self.fields["line"].queryset = lines
        self.fields["allowed_models"].choices = [
            (name, name)
            for name in ModelPrice.objects.filter(enabled=True)
            .order_by("model")
            .values_list("model", flat=True)
        ]
        if self.instance.pk:
            self.initial["allowed_models"] = self.instance.allowed_models
            self.initial["ip_allowlist"] = "\n".join(self.instance.ip_allowlist)
            if self.instance.quota_limit:
                self.initial["quota_limit_usd"] = format_dollars_plain(self.instance.quota_limit)
        else:
            default = self.fields["line"].queryset.filter(name="default").first()
            self.initial.setdefault("line", default)
            self.initial.setdefault("unlimited_quota", True)

    def clean_expires_at(self):
        value = self.cleaned_data["expires_at"]
        if value and value <= timezone.now():
            raise forms.ValidationError(
                "The expiry must be in the future. Leave it empty for none."
            )
        return value

    def clean_line(self):
        line = self.cleaned_data["line"]
        if not line.is_available_to(self.user):
            raise forms.ValidationError(
                f"You do not have access to the line “{line}”. "
                "Choose another, or ask support for a grant."
            )
        return line

    def clean_ip_allowlist(self):
        entries = []
        for raw in self.cleaned_data["ip_allowlist"].replace(",", "\n").splitlines():
            entry = raw.strip()
            if not entry:
                continue
            try:
                network = ipaddress.ip_network(entry, strict=True)
            except ValueError:
                try:
                    network = ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise forms.ValidationError(
                        f"“{entry}” is not an IP address or CIDR range, "
                        "such as 203.0.113.7 or 10.0.0.0/8."
                    ) from None
                raise forms.ValidationError(
                    f"“{entry}” has host bits set; did you mean {network}?"
                ) from None
            if str(network) not in entries:
                entries.append(str(network))
        if len(entries) > 100:
            raise forms.ValidationError("At most 100 entries; use CIDR ranges to group addresses.")
        return entries

    def clean(self):
        cleaned = super().clean()
        limited = not cleaned.get("unlimited_quota")
        if limited and "quota_limit_usd" not in self.errors and not cleaned.get("quota_limit_usd"):
            self.add_error(
                "quota_limit_usd",
                "Set a limit in dollars, such as 5, or switch on unlimited quota.",
            )
        return cleaned

    def apply_to(self, token):
        """Copies the cleaned fields that are not model fields onto `token`."""
        token.allowed_models = self.cleaned_data["allowed_models"]
        token.ip_allowlist = self.cleaned_data["ip_allowlist"]
        token.quota_limit = None if token.unlimited_quota else self.cleaned_data["quota_limit_usd"]
        return token
