"""Request logs and their rollups. No request or response content is ever stored here.

Log rows are written in batches by logs.writer, in the same transaction that settles the
money they cost and updates the rollups that every chart and total reads.
"""

import uuid
from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q

from billing.pricing import CostBreakdown


def _fk(to, **extra):
    # Log tables are append-only facts: no database-level constraint to check on every insert,
    # and rows outlive what they name (a deleted token, a removed channel).
    # No index of its own either: the composite indexes below, which lead with the user,
    # serve every query; each extra index costs every insert.
    return models.ForeignKey(
        to,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
        **extra,
    )


class RequestLog(models.Model):
    """One gateway request: who, what, where, how it went, and exactly what it cost."""

    class Endpoint(models.TextChoices):
        CHAT = "chat", "Chat completions"
        COMPLETION = "completion", "Completions"
        EMBEDDING = "embedding", "Embeddings"
        MODELS = "models", "Model list"
        RESPONSES = "responses", "Responses"
        MESSAGES = "messages", "Messages (Anthropic)"
        COUNT = "count", "Token count (Anthropic)"
        IMAGE = "image", "Images"

    # The id is a UUIDv7 made by the gateway: time-ordered, so that ordering by id is ordering
    # by time and a time range is an id range on the same index.
    id = models.UUIDField(primary_key=True, editable=False)
    created_at = models.DateTimeField()
    user = _fk(settings.AUTH_USER_MODEL)
    token = _fk("tokens.Token", null=True, blank=True)
    line = _fk("billing.Line", null=True, blank=True)
    # The channel's id only: channels belong to the gateway, which sits above the logs.
    channel_id = models.BigIntegerField(null=True, blank=True)
    endpoint = models.CharField(max_length=10, choices=Endpoint.choices)
    model = models.CharField(max_length=100, blank=True)
    stream = models.BooleanField(default=False)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=40, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    cost = models.BigIntegerField(default=0, help_text="Micro-dollars charged.")
    model_multiplier = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    completion_multiplier = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    line_multiplier = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    call_price = models.BigIntegerField(default=0)
    per_call = models.BooleanField(default=False)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    retries = models.PositiveSmallIntegerField(default=0)
    # The parts of the usage (of prompt_tokens, of completion_tokens) and the multipliers of
    # those priced apart, as charged.
    cache_read_tokens = models.PositiveIntegerField(default=0)
    cache_write_5m_tokens = models.PositiveIntegerField(default=0)
    cache_write_1h_tokens = models.PositiveIntegerField(default=0)
    audio_input_tokens = models.PositiveIntegerField(default=0)
    audio_output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    image_tokens = models.PositiveIntegerField(default=0)
    cache_read_multiplier = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    cache_write_5m_multiplier = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    cache_write_1h_multiplier = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    audio_input_multiplier = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    audio_output_multiplier = models.DecimalField(max_digits=12, decimal_places=6, default=0)

    class Meta:
        # One index per filter the log page offers, each costing every insert. None on the
        # time: a time range is an id range (the id is a UUIDv7).
        indexes = [
            models.Index(fields=["user", "-id"], name="log_user_recent"),
            models.Index(fields=["user", "token", "-id"], name="log_user_token"),
            models.Index(fields=["user", "model", "-id"], name="log_user_model"),
            models.Index(fields=["user", "client_ip", "-id"], name="log_user_ip"),
            models.Index(
                fields=["user", "-id"], name="log_user_errors", condition=Q(status__gte=400)
            ),
        ]

    def __str__(self):
        return str(self.id)

    @property
    def succeeded(self):
        return self.status < 400

    @property
    def breakdown(self):
        return CostBreakdown(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            model_multiplier=self.model_multiplier,
            completion_multiplier=self.completion_multiplier,
            line_multiplier=self.line_multiplier,
            call_price=self.call_price,
            per_call=self.per_call,
            cost=self.cost,
            cache_read_tokens=self.cache_read_tokens,
            cache_write_5m_tokens=self.cache_write_5m_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens,
            audio_input_tokens=self.audio_input_tokens,
            audio_output_tokens=self.audio_output_tokens,
            reasoning_tokens=self.reasoning_tokens,
            cache_read_multiplier=self.cache_read_multiplier,
            cache_write_5m_multiplier=self.cache_write_5m_multiplier,
            cache_write_1h_multiplier=self.cache_write_1h_multiplier,
            audio_input_multiplier=self.audio_input_multiplier,
            audio_output_multiplier=self.audio_output_multiplier,
        )

    @classmethod
    def id_floor(cls, moment: datetime):
        """The smallest id a row made at `moment` can have: a time bound as an id bound."""
        millis = int(moment.timestamp() * 1000)
        return uuid.UUID(int=(millis << 80) | (0x7 << 76))


class UsageRollup(models.Model):
    """Totals per time bucket, user, token, line, model and outcome. Charts read only these.

    Keys are plain integers, 0 for "none", so that the batched upsert (INSERT … ON CONFLICT
    DO UPDATE, adding to the totals) matches the same row on PostgreSQL and SQLite alike.
    """

    user_id = models.BigIntegerField()
    token_id = models.BigIntegerField(default=0)
    line_id = models.BigIntegerField(default=0)
    model = models.CharField(max_length=100, blank=True)
    ok = models.BooleanField(help_text="Success (status below 400) or error.")
    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost = models.BigIntegerField(default=0)
    latency_ms = models.BigIntegerField(default=0, help_text="Sum, for averages.")
    cache_read_tokens = models.BigIntegerField(default=0, help_text="Part of prompt_tokens.")
    cache_write_tokens = models.BigIntegerField(default=0, help_text="Part of prompt_tokens.")

    KEY_FIELDS = ("bucket", "user_id", "token_id", "line_id", "model", "ok")
    SUM_FIELDS = (
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "latency_ms",
        "cache_read_tokens",
        "cache_write_tokens",
    )

    class Meta:
        abstract = True

    def __str__(self):
        return f"{self.bucket} user {self.user_id} {self.model}: {self.requests} requests"


def _rollup_meta(name):
    return type(
        "Meta",
        (),
        {
            "constraints": [
                models.UniqueConstraint(
                    fields=["bucket", "user_id", "token_id", "line_id", "model", "ok"],
                    name=f"{name}_key",
                )
            ],
            # Covering: charts and totals are index-only scans on PostgreSQL, however scattered
            # one user's rows are among everybody's in the table; so it holds every filter
            # and every sum a page reads (not latency_ms, which no page reads from them).
            "indexes": [
                models.Index(
                    fields=["user_id", "bucket"],
                    include=[
                        "ok",
                        "requests",
                        "prompt_tokens",
                        "completion_tokens",
                        "cost",
                        "cache_read_tokens",
                        "cache_write_tokens",
                        "model",
                        "token_id",
                        "line_id",
                    ],
                    name=f"{name}_user_time",
                )
            ],
        },
    )


class UsageMinute(UsageRollup):
    bucket = models.DateTimeField(help_text="The minute, UTC.")
    Meta = _rollup_meta("usage_minute")


class UsageHour(UsageRollup):
    bucket = models.DateTimeField(help_text="The hour, UTC.")
    Meta = _rollup_meta("usage_hour")


class UsageDay(UsageRollup):
    bucket = models.DateField(help_text="The day, UTC.")
    Meta = _rollup_meta("usage_day")


class UsagePending(UsageRollup):
    """A flush's usage totals per minute and key, not yet added to the rollups.

    Flushes only append these: no rollup row to find, update and lock, so the gateways' flushes
    never wait on each other's totals. Every few seconds `logs.writer.usage_fold` moves them
    into the minute, hour and day rollups and the platform's minutes, a key's many flushes
    added at once, and deletes them. No page reads this table."""

    bucket = models.DateTimeField(help_text="The minute, UTC.")
    hour = models.DateTimeField(help_text="The hour, UTC.")
    day = models.DateField(help_text="The day, UTC.")

    def __str__(self):
        return f"{self.bucket} user {self.user_id} {self.model}: {self.requests} requests, pending"


class PlatformMinute(models.Model):
    """Traffic of the whole platform per minute and model, for the staff dashboard."""

    bucket = models.DateTimeField()
    model = models.CharField(max_length=100, blank=True)
    ok = models.BooleanField()
    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost = models.BigIntegerField(default=0)
    latency_ms = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)

    KEY_FIELDS = ("bucket", "model", "ok")
    SUM_FIELDS = UsageRollup.SUM_FIELDS

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bucket", "model", "ok"], name="platform_minute_key")
        ]
        permissions = [("view_platform", "Can view the platform dashboard (all traffic)")]

    def __str__(self):
        return f"{self.bucket} {self.model}: {self.requests} requests"


class IpDay(models.Model):
    """Which addresses used which token on which day: the first thing to check on a leak."""

    day = models.DateField()
    user_id = models.BigIntegerField()
    token_id = models.BigIntegerField(default=0)
    client_ip = models.GenericIPAddressField()
    requests = models.PositiveIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    KEY_FIELDS = ("day", "user_id", "token_id", "client_ip")

    # Here, in PlatformMinute and in ChannelMinute, no index holds a total: the writer adds to
    # a row in place (a HOT update, in the room migration 0012 keeps on each page), with no new
    # index entries.
    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "user_id", "token_id", "client_ip"], name="ip_day_key"
            )
        ]
        indexes = [
            models.Index(fields=["user_id", "day"], name="ip_day_user"),
            models.Index(fields=["token_id", "day"], name="ip_day_token"),
        ]

    def __str__(self):
        return f"{self.day} {self.client_ip}: {self.requests} requests"


class ChannelMinute(models.Model):
    """Traffic of one upstream channel per minute, for staff."""

    bucket = models.DateTimeField()
    channel_id = models.BigIntegerField()
    requests = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    latency_ms = models.BigIntegerField(default=0)

    KEY_FIELDS = ("bucket", "channel_id")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bucket", "channel_id"], name="channel_minute_key")
        ]
        indexes = [models.Index(fields=["channel_id", "bucket"], name="channel_minute_recent")]

    def __str__(self):
        return f"{self.bucket} channel {self.channel_id}: {self.requests} requests"
