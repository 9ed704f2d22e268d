from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.html import format_html

from billing.models import ModelPrice
from logs.models import ChannelMinute
from relay.health import channel_test, channels_put_back
from relay.models import Channel

# The kinds that reach a provider, with an example of their base URL.
BASE_URLS = {
    Channel.Type.OPENAI: "https://api.openai.com/v1",
    Channel.Type.ANTHROPIC: "https://api.anthropic.com/v1",
    Channel.Type.GEMINI: "https://generativelanguage.googleapis.com/v1beta",
}
# The kinds whose protocol has chat alone (no embeddings, no images).
CHAT_ONLY = {Channel.Type.ANTHROPIC, Channel.Type.GEMINI}


class ChannelForm(forms.ModelForm):
    """The key is write-only: shown never, replaced only when a new one is typed."""

    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        label="API key",
        help_text=(
            "Stored encrypted and never shown again. Leave empty to keep the current key, "
            "unless the base URL changes: a new address needs its key entered again."
        ),
    )
    model_list = forms.CharField(
        label="Models",
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Public model names this channel serves, one per line or comma-separated.",
    )

    class Meta:
        model = Channel
        fields = [
            "name",
            "type",
            "base_url",
            "model_map",
            "lines",
            "priority",
            "weight",
            "enabled",
            "connect_timeout",
            "read_timeout",
            "simulator",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial["model_list"] = "\n".join(self.instance.model_names or [])
        if self.instance.key_hint:
            self.fields["api_key"].help_text += f" Current key ends in {self.instance.key_hint}."

    def clean_model_list(self):
        names = [n.strip() for n in self.cleaned_data["model_list"].replace(",", "\n").splitlines()]
        names = list(dict.fromkeys(n for n in names if n))
        if not names:
            raise forms.ValidationError("List at least one model.")
        return names

    def clean_model_map(self):
        value = self.cleaned_data["model_map"] or {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise forms.ValidationError('Use {"public name": "upstream name", …}.')
        return value

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data
        kind = cleaned.get("type")
        if kind in BASE_URLS and not cleaned.get("base_url"):
            self.add_error(
                "base_url",
                f"A channel of this kind needs its base URL, such as {BASE_URLS[kind]}.",
            )
        if kind in CHAT_ONLY:
            served = set(cleaned.get("model_list") or ())
            others = ModelPrice.objects.filter(model__in=served).exclude(kind=ModelPrice.Kind.CHAT)
            if others.exists():
                names = ", ".join(sorted(others.values_list("model", flat=True)))
                self.add_error(
                    "model_list",
                    f"This kind of channel serves chat models only; move {names} to an "
                    "OpenAI-compatible channel.",
                )
        # The stored key belongs to the address it was entered for: it never follows a new one.
        moved = self.instance.pk and "base_url" in self.changed_data
        if moved and self.instance.key_encrypted and not cleaned.get("api_key", "").strip():
            self.add_error(
                "api_key",
                "The base URL changed: enter the API key for the new address too (the saved "
                "key is never sent anywhere but the address it was entered for), or put the "
                "old base URL back.",
            )
        return cleaned

    def save(self, commit=True):
        channel = super().save(commit=False)
        channel.model_names = self.cleaned_data["model_list"]
        if self.cleaned_data.get("api_key"):
            channel.set_key(self.cleaned_data["api_key"].strip())
        if commit:
            channel.save()
            self.save_m2m()
        return channel


def _since(field, period):
    since = timezone.now() - period
    rows = (
        ChannelMinute.objects.filter(channel_id=OuterRef("pk"), bucket__gte=since)
        .values("channel_id")
        .annotate(total=Sum(field))
        .values("total")
    )
    return Coalesce(Subquery(rows), 0)


HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
HEALTH_FIELDS = Channel.HEALTH_FIELDS


def _success(requests, failures):
    return f"{100 * (requests - failures) / requests:.1f}%" if requests else "—"


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = (
        "name",
        "type",
        "status",
        "priority",
        "weight",
        "requests_hour",
        "success_rate",
        "latency",
        "requests_day",
        "success_rate_day",
        "last_error_short",
        "last_test",
    )
    list_filter = ("type", "enabled", ("auto_disabled_at", admin.EmptyFieldListFilter), "lines")
    search_fields = ("name", "base_url")
    filter_horizontal = ("lines",)
    readonly_fields = ("key_hint", *HEALTH_FIELDS)
    fieldsets = (
        (None, {"fields": ("name", "type", "base_url", "api_key", "key_hint")}),
        (
            "Routing",
            {"fields": ("model_list", "model_map", "lines", "priority", "weight", "enabled")},
        ),
        ("Timeouts", {"fields": ("connect_timeout", "read_timeout")}),
        ("Simulator", {"fields": ("simulator",), "classes": ("collapse",)}),
        ("Health", {"fields": HEALTH_FIELDS}),
    )
    actions = ["test_now", "put_back_in_rotation"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                hour_requests=_since("requests", HOUR),
                hour_failures=_since("failures", HOUR),
                hour_latency=_since("latency_ms", HOUR),
                day_requests=_since("requests", DAY),
                day_failures=_since("failures", DAY),
            )
        )

    @admin.display(description="status")
    def status(self, channel):
        if not channel.enabled:
            return "switched off"
        if channel.auto_disabled_at:
            return format_html(
                '<strong title="{}">out of rotation</strong>', channel.disabled_reason
            )
        return "in rotation"

    @admin.display(description="requests (1 h)", ordering="hour_requests")
    def requests_hour(self, channel):
        return channel.hour_requests

    @admin.display(description="success (1 h)")
    def success_rate(self, channel):
        return _success(channel.hour_requests, channel.hour_failures)

    @admin.display(description="requests (24 h)", ordering="day_requests")
    def requests_day(self, channel):
        return channel.day_requests

    @admin.display(description="success (24 h)")
    def success_rate_day(self, channel):
        return _success(channel.day_requests, channel.day_failures)

    @admin.display(description="latency (1 h)")
    def latency(self, channel):
        if not channel.hour_requests:
            return "—"
        return f"{channel.hour_latency // channel.hour_requests} ms"

    @admin.display(description="last error")
    def last_error_short(self, channel):
        return (
            (channel.last_error[:60] + "…") if len(channel.last_error) > 60 else channel.last_error
        )

    @admin.display(description="last test")
    def last_test(self, channel):
        if channel.last_tested_at is None:
            return "—"
        verdict = "ok" if channel.last_test_ok else "failed"
        return f"{verdict}, {channel.last_test_latency_ms} ms"

    @admin.action(description="Test now (one tiny real request)", permissions=["change"])
    def test_now(self, request, queryset):
        for channel in queryset:
            ok, latency, detail = channel_test(channel.pk)
            level = messages.SUCCESS if ok else messages.ERROR
            self.message_user(request, f"{channel}: {detail} in {latency} ms.", level)

    @admin.action(description="Put back in rotation", permissions=["change"])
    def put_back_in_rotation(self, request, queryset):
        count = channels_put_back(queryset.values_list("pk", flat=True))
        self.message_user(request, f"{count} channel(s) back in rotation.")
