import uuid
from datetime import timedelta
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.utils import timezone

from billing.models import Line
from console.lib.fields import DateTimeInRangeField
from logs import stats
from logs.ids import made_at
from tokens.models import Token

PERIODS = [
    ("1h", "Last hour"),
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("all", "All kept"),
    ("custom", "Custom range"),
]
PERIOD_SPANS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


class TokenChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, token):
        return f"{token.name} (deleted)" if token.deleted_at else token.name


class LogFilterForm(forms.Form):
    """The filters of the request log, read from the query string."""

    period = forms.ChoiceField(
        choices=PERIODS,
        required=False,
        initial="24h",
        label="Time",
        # From and To matter only for a custom period; the page shows them then.
        widget=forms.Select(attrs={"data-reveal": ".custom-range", "data-reveal-when": "custom"}),
    )
    start = DateTimeInRangeField(
        required=False,
        label="From",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    end = DateTimeInRangeField(
        required=False,
        label="To",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    token = TokenChoiceField(
        queryset=Token.objects.none(), required=False, empty_label="All tokens"
    )
    model = forms.ChoiceField(required=False, label="Model")
    line = forms.ModelChoiceField(
        queryset=Line.objects.all(),
        required=False,
        empty_label="All lines",
        label="Line",
        to_field_name="name",
    )
    status = forms.ChoiceField(
        choices=[("", "Any status"), ("ok", "Success"), ("error", "Error")], required=False
    )
    ip = forms.GenericIPAddressField(required=False, label="IP address", unpack_ipv4=True)

    def __init__(self, data, *, user):
        if "group" in data and "line" not in data:
            # The name of the filter before lines had one name: old links keep working.
            data = data.copy()
            data["line"] = data["group"]
        super().__init__(data, label_suffix="")
        self.fields["token"].queryset = Token.objects.filter(user=user).order_by(
            "deleted_at", "name"
        )
        models = stats.used_models(user)
        self.fields["model"].choices = [("", "All models"), *[(m, m) for m in models]]
        self.fields["model"].error_messages["invalid_choice"] = (
            "You have not called “%(value)s” recently; pick a model from the list."
        )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("period") == "custom":
            start, end = cleaned.get("start"), cleaned.get("end")
            if not start and not end:
                self.add_error("start", "Give a start or an end time for a custom range.")
            if start and end and start >= end:
                self.add_error("end", "The end must be after the start.")
        return cleaned

    def bounds(self, now=None):
        """(start, end) in UTC for the chosen period; either may be None (open)."""
        now = now or timezone.now()
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        period = data.get("period") or "24h"
        if period == "custom":
            return data.get("start"), data.get("end")
        if period == "all":
            return None, None
        return now - PERIOD_SPANS[period], None

    def query(self):
        """The filters as a query string, for pagination and export links."""
        if not self.is_bound or not self.is_valid():
            return ""
        keep = {}
        for name, value in self.cleaned_data.items():
            if value in (None, ""):
                continue
            if name == "token":
                value = value.pk
            elif name == "line":
                value = value.name
            elif name in ("start", "end"):
                value = timezone.localtime(value).strftime("%Y-%m-%dT%H:%M")
            keep[name] = value
        return urlencode(keep)

    def rollup_filters(self):
        """The filters as the rollups can apply them (stats._scoped's keywords), or None when
        one of them is not kept in the rollups (the client's IP address)."""
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        if data.get("ip"):
            return None
        status = data.get("status")
        return {
            "token_id": data["token"].pk if data.get("token") else None,
            "model_name": data.get("model") or None,
            "line_id": data["line"].pk if data.get("line") else None,
            "ok": {"ok": True, "error": False}.get(status),
        }


REQUEST_ID_HELP = (
    "the X-Request-Id header of an answer, or the id on a row of this log, such as "
    "0192f0c4-5a1e-7b3c-9d2e-6f7a8b9c0d1e"
)


class RequestIdForm(forms.Form):
    """Finds one request of the log by its id."""

    request_id = forms.CharField(
        label="Request id",
        max_length=100,
        error_messages={"required": "Paste a request id: " + REQUEST_ID_HELP + "."},
        widget=forms.TextInput(
            attrs={
                "placeholder": "Paste an X-Request-Id",
                "spellcheck": "false",
                "autocomplete": "off",
            }
        ),
    )

    def clean_request_id(self):
        text = self.cleaned_data["request_id"].strip().strip("\"'")
        try:
            key = uuid.UUID(text)
        except ValueError:
            raise forms.ValidationError(
                "“%(text)s” is not a request id. A request id is " + REQUEST_ID_HELP + ".",
                params={"text": text[:60]},
            ) from None
        if key.version != 7:
            raise forms.ValidationError(
                "“%(text)s” is not one of our request ids (those are UUIDs of version 7). "
                "Paste " + REQUEST_ID_HELP + ".",
                params={"text": text},
            )
        return key

    def not_found(self, key):
        """Says why a well-formed id has no row in this user's log, and adds it as an error."""
        made = made_at(key)
        kept = settings.LOG_RETENTION_DAYS
        if made and made < timezone.now() - timedelta(days=kept):
            message = (
                f"Request {key} was made on {timezone.localtime(made):%Y-%m-%d}; request logs "
                f"are kept {kept} days, so it is no longer here."
            )
        else:
            message = (
                f"No request {key} in your log. Check that you are signed in to the account "
                "whose API token made it; requests sent with an unknown key are not logged."
            )
        self.add_error("request_id", message)
