from decimal import Decimal
from typing import cast

from django import forms
from django.conf import settings
from django.utils import timezone

from billing.models import LedgerEntry, PriceAdjustment
from billing.providers import enabled_providers
from console.lib.fields import DateTimeInRangeField
from console.lib.money import (
    MAX_DOLLARS,
    MICRO,
    AmountError,
    dollars_to_micros,
    format_dollars_plain,
    format_usd,
    parse_dollars,
)

CENT = Decimal("0.01")


class AmountField(forms.CharField):
    """A dollar amount typed by a person: "20", "$20", "1,000.50". Cleans to micro-dollars."""

    def __init__(self, *, minimum=None, maximum=None, cents_only=True, **kwargs):
        self.minimum, self.maximum, self.cents_only = minimum, maximum, cents_only
        kwargs.setdefault("widget", forms.TextInput(attrs={"inputmode": "decimal"}))
        super().__init__(**kwargs)

    def clean(self, value):
        value = super().clean(value)
        if value in self.empty_values:
            return None
        limits = self._limits_text()
        try:
            amount = parse_dollars(value)
        except AmountError as error:
            if error.code == "too_small":
                message = f"The amount must be more than zero{limits}."
            elif error.code == "too_large" and self.maximum is not None:
                message = f"The largest amount is {format_usd(self.maximum)}{limits}."
            elif error.code == "too_large":
                message = f"Enter an amount below ${MAX_DOLLARS:,}."
            else:
                message = f"Enter an amount in dollars, such as 20{limits}."
            raise forms.ValidationError(message) from None
        if self.cents_only and amount != amount.quantize(CENT):
            raise forms.ValidationError("Use at most two decimals (whole cents).")
        micros = dollars_to_micros(amount)
        if micros <= 0:
            raise forms.ValidationError(f"The amount must be more than zero{limits}.")
        if self.minimum is not None and micros < self.minimum:
            raise forms.ValidationError(
                f"The smallest amount is {format_usd(self.minimum)}{limits}."
            )
        if self.maximum is not None and micros > self.maximum:
            raise forms.ValidationError(
                f"The largest amount is {format_usd(self.maximum)}{limits}."
            )
        return micros

    def _limits_text(self):
        if self.minimum is not None and self.maximum is not None:
            return f" (between {format_usd(self.minimum)} and {format_usd(self.maximum)})"
        return ""


class RechargeForm(forms.Form):
    amount = AmountField(label="Amount (USD)")
    provider = forms.ChoiceField(label="Pay with", widget=forms.RadioSelect)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        amount = cast(AmountField, self.fields["amount"])
        amount.minimum, amount.maximum = settings.RECHARGE_MIN, settings.RECHARGE_MAX
        self.providers = providers = enabled_providers()
        provider = cast(forms.ChoiceField, self.fields["provider"])
        provider.choices = [(p.name, p.label) for p in providers]
        if len(providers) == 1:
            provider.initial = providers[0].name

    def clean_provider(self):
        name = self.cleaned_data["provider"]
        if name not in {p.name for p in enabled_providers()}:
            raise forms.ValidationError("Choose a payment method from the list.")
        return name


class RedeemForm(forms.Form):
    code = forms.CharField(
        label="Redemption code",
        max_length=40,
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "XXXX-XXXX-XXXX-XXXX"}),
    )


class LedgerFilterForm(forms.Form):
    kind = forms.ChoiceField(
        required=False, choices=[("", "All kinds"), *LedgerEntry.Kind.choices], label="Kind"
    )


class StaffReasonForm(forms.Form):
    """Asks staff why, before an admin action that moves money. The reason stays among staff."""

    reason = forms.CharField(
        label="Internal reason — staff only",
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Kept in the ledger and the order's history for staff. The user never sees it.",
    )


class StaffNoteForm(StaffReasonForm):
    """A reason for staff, and a note for the user, who reads it where the money moved."""

    note = forms.CharField(
        label="Note to the customer — shown in their balance history",
        max_length=200,
        required=False,
        help_text="Optional: plain words the user reads next to the amount. Empty: a short "
        "default that says support did it, such as “Added by support.”",
    )
    field_order = ["note", "reason"]


class FailOrderForm(StaffReasonForm):
    note = forms.CharField(
        label="Note to the customer — shown on their order page",
        max_length=200,
        required=False,
        help_text="Optional: plain words the user reads on the order. Empty: “Closed by support.”",
    )
    field_order = ["note", "reason"]


class RefundForm(StaffNoteForm):
    force = forms.BooleanField(
        required=False,
        label="Refund even if the balance no longer covers it (the balance goes to zero)",
    )


class BalanceAdjustForm(StaffNoteForm):
    field_order = ["amount", "note", "reason"]
    amount = forms.CharField(
        max_length=20,
        help_text="Dollars; negative to take money off, e.g. -5 or 12.50.",
    )

    def clean_amount(self):
        raw = self.cleaned_data["amount"]
        try:
            micros = dollars_to_micros(raw)
        except AmountError as error:
            if error.code == "invalid":
                raise forms.ValidationError(
                    "Enter an amount in dollars, such as 10 or -2.50."
                ) from None
            raise forms.ValidationError(str(error)) from None
        if micros == 0:
            raise forms.ValidationError("The amount cannot be zero.")
        return micros


class RedemptionBatchForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the codes are for, e.g. a campaign.")
    amount = AmountField(label="Amount per code (USD)", minimum=10_000, maximum=100_000_000_000)
    count = forms.IntegerField(min_value=1, max_value=10_000)
    expires_at = DateTimeInRangeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Optional. After this time the codes no longer work.",
    )

    def clean_expires_at(self):
        value = self.cleaned_data["expires_at"]
        if value and value <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return value


class PriceChangeFields(forms.Form):
    """What every price edit in admin asks: why, which the announcement publishes, and from
    when the new prices apply."""

    change_reason = forms.CharField(
        required=False,
        max_length=500,
        label="Why the prices change (published)",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required when a price changes. Saving a new price publishes an announcement "
        "that opens with these words, emails the price-change subscribers, and applies the "
        "new price at the time below, not before.",
    )
    change_effective_at = DateTimeInRangeField(
        required=False,
        label="New prices apply from",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Empty: now. A later time schedules the change: it is announced now and "
        "shown on the pricing page until it applies.",
    )


class CallPriceField(forms.CharField):
    """A price per call in dollars ("0.04", "$0.04"), kept as micro-dollars: shown from
    micro-dollars, cleaned to them exactly, never rounded."""

    def __init__(self, **kwargs):
        kwargs.setdefault("widget", forms.TextInput(attrs={"inputmode": "decimal"}))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        return format_dollars_plain(value) if isinstance(value, int) else value

    def to_python(self, value):
        value = super().to_python(value)
        if value in self.empty_values:
            return None
        try:
            dollars = parse_dollars(value)
        except AmountError:
            raise forms.ValidationError("Enter a price in dollars, such as 0.04.") from None
        if dollars < 0:
            raise forms.ValidationError("A price cannot be below zero.")
        if dollars != dollars.quantize(MICRO):
            raise forms.ValidationError(
                "Use at most six decimals: a price is kept to the micro-dollar ($0.000001)."
            )
        return dollars_to_micros(dollars)


PRICE_FIELDS = {
    "model_multiplier": PriceAdjustment.Field.MODEL_MULTIPLIER,
    "completion_multiplier": PriceAdjustment.Field.COMPLETION_MULTIPLIER,
    "call_price": PriceAdjustment.Field.CALL_PRICE,
    "multiplier": PriceAdjustment.Field.LINE_MULTIPLIER,
    "cache_read_multiplier": PriceAdjustment.Field.CACHE_READ_MULTIPLIER,
    "cache_write_5m_multiplier": PriceAdjustment.Field.CACHE_WRITE_5M_MULTIPLIER,
    "cache_write_1h_multiplier": PriceAdjustment.Field.CACHE_WRITE_1H_MULTIPLIER,
    "audio_input_multiplier": PriceAdjustment.Field.AUDIO_INPUT_MULTIPLIER,
    "audio_output_multiplier": PriceAdjustment.Field.AUDIO_OUTPUT_MULTIPLIER,
}
