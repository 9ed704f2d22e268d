from django.db import models
from django.utils import timezone

from console.lib.counters import CountersOutOfSave
from relay import crypto


class Channel(CountersOutOfSave, models.Model):
    """One upstream provider account that serves some models to some lines."""

    # Its health, written by the gateway and the health checks while staff may edit the rest.
    HEALTH_FIELDS = (
        "auto_disabled_at",
        "disabled_reason",
        "last_error",
        "last_error_at",
        "last_tested_at",
        "last_test_ok",
        "last_test_latency_ms",
    )
    COUNTERS = frozenset(HEALTH_FIELDS)

    class Type(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic (Messages API)"
        GEMINI = "gemini", "Google Gemini (generateContent)"
        SIMULATOR = "simulator", "Simulator (answers in process)"

    name = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=20, choices=Type.choices, default=Type.OPENAI)
    base_url = models.URLField(
        blank=True,
        help_text=(
            "Up to and including the version: https://api.openai.com/v1, "
            "https://api.anthropic.com/v1, https://generativelanguage.googleapis.com/v1beta."
        ),
    )
    key_encrypted = models.TextField(blank=True, editable=False)
    key_hint = models.CharField(max_length=12, blank=True, editable=False)
    model_names = models.JSONField(
        default=list, help_text="Public model names this channel serves."
    )
    model_map = models.JSONField(
        default=dict, blank=True, help_text="Public name → upstream name, where they differ."
    )
    lines = models.ManyToManyField("billing.Line", related_name="channels")
    priority = models.IntegerField(default=0, help_text="Higher is tried first.")
    weight = models.PositiveIntegerField(default=10, help_text="Share among equal priorities.")
    enabled = models.BooleanField(default=True, help_text="Switched on by staff.")
    connect_timeout = models.FloatField(default=5.0, help_text="Seconds.")
    read_timeout = models.FloatField(
        default=120.0, help_text="Seconds to wait for the first byte and between bytes."
    )
    simulator = models.JSONField(
        default=dict,
        blank=True,
        help_text='Simulator only: {"latency_ms": 0, "error_rate": 0.0, "completion_tokens": 24}.',
    )
    auto_disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "name"]

    def __str__(self) -> str:
        return self.name

    def set_key(self, key: str) -> None:
        self.key_encrypted = crypto.encrypt(key)
        self.key_hint = f"…{key[-4:]}" if len(key) >= 8 else "…"

    def get_key(self) -> str:
        return crypto.decrypt(self.key_encrypted)

    def upstream_model(self, model: str) -> str:
        return self.model_map.get(model, model)

    def disable(self, reason: str) -> None:
        Channel.objects.filter(pk=self.pk, auto_disabled_at__isnull=True).update(
            auto_disabled_at=timezone.now(), disabled_reason=reason[:500]
        )
