import uuid

from django import forms

from billing.models import Line, ModelPrice, RechargeOrder
from console.lib.fields import DateTimeInRangeField
from console.lib.money import format_usd
from console.support.attachments import AttachmentsField
from console.support.models import Ticket
from tokens.models import Token

Category = Ticket.Category


class OrderChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, order):
        amount, status = format_usd(order.amount), order.get_status_display()
        return f"{order.number} · {amount} · {status} · {order.created_at:%Y-%m-%d %H:%M}"


class TicketForm(forms.Form):
    """One form whose questions follow the category (page code shows the right ones; the
    server requires them whatever the browser did)."""

    category = forms.ChoiceField(choices=Category.choices, widget=forms.RadioSelect)
    subject = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    order = OrderChoiceField(
        queryset=RechargeOrder.objects.none(),
        required=False,
        label="The order",
        empty_label="Choose an order",
    )
    token = forms.ModelChoiceField(
        queryset=Token.objects.none(),
        required=False,
        label="The token",
        empty_label="Choose a token",
    )
    request_id = forms.CharField(
        required=False,
        max_length=40,
        label="Request id (optional)",
        help_text="The X-Request-Id of a failed request, from its response or your request log.",
    )
    error_time = DateTimeInRangeField(
        required=False,
        label="When did it happen?",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    model = forms.CharField(required=False, max_length=100, label="Model")
    error_text = forms.CharField(
        required=False,
        max_length=2000,
        label="The error message",
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    line = forms.ModelChoiceField(
        queryset=Line.objects.filter(requires_grant=True, is_active=True),
        required=False,
        label="Which line?",
        to_field_name="name",
        empty_label="Choose a line",
    )
    volume = forms.CharField(
        required=False,
        max_length=200,
        label="Expected volume",
        help_text="For example: 50 million tokens a day, mostly gpt-4o-mini.",
    )
    message = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}), max_length=10_000, label="What happened?"
    )
    attachments = AttachmentsField()

    REQUIRED_BY_CATEGORY = {
        Category.RECHARGE: ("order",),
        Category.CHARGES: ("token",),
        Category.API_ERRORS: ("error_time", "model", "error_text"),
        Category.LINE_ACCESS: ("line", "volume"),
    }

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["order"].queryset = RechargeOrder.objects.filter(user=user).order_by(
            "-created_at"
        )
        self.fields["token"].queryset = Token.objects.alive().filter(user=user)
        self.fields["model"].widget.attrs["list"] = "model-names"
        for names in self.REQUIRED_BY_CATEGORY.values():
            for name in names:
                # Required once its category is chosen (checked in clean): not "optional".
                self.fields[name].required_by_choice = True
        self.model_names = list(
            ModelPrice.objects.filter(enabled=True)
            .order_by("model")
            .values_list("model", flat=True)
        )

    def clean_request_id(self):
        value = self.cleaned_data["request_id"].strip()
        if not value:
            return None
        try:
            return uuid.UUID(value)
        except ValueError:
            raise forms.ValidationError(
                "That is not a request id; it looks like 01a2b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b."
            ) from None

    def clean(self):
        cleaned = super().clean()
        messages = {
            "order": "Choose the order that was not credited (see your recharge history).",
            "token": "Choose the token with the charges you do not recognise.",
            "error_time": "Say roughly when the errors happened.",
            "model": "Say which model you called.",
            "error_text": "Paste the error message you got.",
            "line": "Choose the line you need.",
            "volume": "Say how much you expect to use, so that we can size the line.",
        }
        for field in self.REQUIRED_BY_CATEGORY.get(cleaned.get("category"), ()):
            if field in ("order", "token") and not self.fields[field].queryset.exists():
                continue  # the user has none: the page asks them to say what happened
            if not cleaned.get(field) and field not in self.errors:
                self.add_error(field, messages[field])
        return cleaned

    def details(self):
        """The category's answers that have no column of their own."""
        data = self.cleaned_data
        category = data["category"]
        if category == Category.API_ERRORS:
            return {
                "time": data["error_time"].isoformat(),
                "model": data["model"],
                "error": data["error_text"],
            }
        if category == Category.LINE_ACCESS:
            return {"line": data["line"].name, "volume": data["volume"]}
        return {}


class ReplyForm(forms.Form):
    message = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}), max_length=10_000, label="Your reply"
    )
    attachments = AttachmentsField()
