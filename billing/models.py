"""Money: balances and their ledger, prices, recharge orders, redemption codes.

Every amount is an integer of micro-dollars (1 USD = 1,000,000). Balances change only through
billing.ledger.ledger_post, which writes the ledger row in the same transaction.
"""

import secrets
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.signals import pre_save
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone

from billing.pricing import PART_MULTIPLIERS, call_cost, per_million
from console.lib.counters import CountersOutOfSave


class Account(CountersOutOfSave, models.Model):
    """The money side of a user: balance, money held by the gateway, and recharge total."""

    COUNTERS = frozenset({"balance", "held", "total_recharged"})

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="account"
    )
    balance = models.BigIntegerField(default=0, help_text="Micro-dollars.")
    held = models.BigIntegerField(
        default=0,
        help_text="Micro-dollars held for requests in flight and for refunds waiting for the "
        "payment provider (part of the balance).",
    )
    total_recharged = models.BigIntegerField(
        default=0, help_text="Cumulative credited recharges, micro-dollars; sets the bonus tier."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # "Balances" in the staff console: "Accounts" is the users' sign-in elsewhere.
        verbose_name = "balance"
        verbose_name_plural = "balances"
        permissions = [("adjust_balance", "Can adjust a user's balance (a ledger entry)")]
        constraints = [
            models.CheckConstraint(
                condition=Q(held__gte=0) & Q(balance__gte=models.F("held")),
                name="account_balance_covers_holds",
            ),
        ]

    def __str__(self):
        return f"Account of {self.user}"

    @property
    def available(self):
        return self.balance - self.held


class LedgerEntry(models.Model):
    """One change of a balance. The ledger of an account sums to its balance, always."""

    class Kind(models.TextChoices):
        RECHARGE = "recharge", "Recharge"
        BONUS = "bonus", "Recharge bonus"
        USAGE = "usage", "API usage"
        REFUND = "refund", "Refund"
        ADJUSTMENT = "adjustment", "Adjustment by staff"
        REDEMPTION = "redemption", "Redemption code"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.BigIntegerField(help_text="Micro-dollars; negative for a debit.")
    balance_after = models.BigIntegerField()
    order = models.ForeignKey(
        "RechargeOrder", null=True, blank=True, on_delete=models.PROTECT, related_name="entries"
    )
    redemption_code = models.ForeignKey(
        "RedemptionCode", null=True, blank=True, on_delete=models.PROTECT, related_name="entries"
    )
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    reason = models.CharField(
        max_length=500, blank=True, help_text="Why staff did it: for staff only, never shown."
    )
    note = models.CharField(
        max_length=200, blank=True, help_text="Shown to the user in their balance history."
    )
    request_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="For usage: how many requests this entry settles."
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["account", "-id"], name="ledger_account_recent"),
            models.Index(fields=["account", "kind", "-id"], name="ledger_account_kind_recent"),
            models.Index(fields=["account", "kind", "created_at"], name="ledger_account_kind_time"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.amount} for {self.account_id}"

    @property
    def is_credit(self):
        return self.amount > 0


class PriceChangeRefused(ValueError):
    """A price was about to change without an announced price adjustment."""


class PricedQuerySet(models.QuerySet["PricesOutOfSave"]):
    """A queryset whose update() never writes a price: prices change by announced adjustment."""

    def update(self, **kwargs):
        if written := self.model.PRICES.intersection(kwargs):
            raise PriceChangeRefused(_refusal(self.model.__name__, written))
        return super().update(**kwargs)

    def update_announced(self, **prices):
        """Writes prices of an adjustment whose announcement is published: for
        billing.services, which applies adjustments, and nothing else."""
        return super().update(**prices)


def _refusal(what, fields):
    return (
        f"{what}: {', '.join(sorted(fields))} change only through an announced price "
        "adjustment: billing.services.price_change(target=…, new_values=…, reason=…, "
        "staff_user=…, effective_at=…) records it, publishes its announcement and applies it "
        "from its time."
    )


class PricesOutOfSave(models.Model):
    """A row whose `PRICES` are written when it is created, then only by applying an announced
    price adjustment (billing.services.price_change): never by save(), a form, the admin, a
    fixture or QuerySet.update().

    save() of an existing row refuses a price that differs from the one read from the
    database, and leaves the prices out of what it writes, so that a row read before an
    adjustment applied never writes the old price back. A fixture (loaddata saves "raw",
    past save()) is checked against the database by a pre_save receiver below."""

    PRICES: frozenset[str] = frozenset()

    objects = PricedQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not kwargs.get("force_insert"):
            self.refuse_price_changes()
            if not self._state.adding:
                named = kwargs.get("update_fields")
                if named is None:
                    named = [f.name for f in self._meta.concrete_fields if not f.primary_key]
                kwargs["update_fields"] = [name for name in named if name not in self.PRICES]
        super().save(*args, **kwargs)
        self._remember_prices()

    @classmethod
    def from_db(cls, db, field_names, values, **kwargs):
        instance = super().from_db(db, field_names, values, **kwargs)
        instance._remember_prices()
        return instance

    def refresh_from_db(self, *args, **kwargs):
        super().refresh_from_db(*args, **kwargs)
        self._remember_prices()

    def _remember_prices(self):
        self._stored_prices = {
            name: self.__dict__[name] for name in self.PRICES if name in self.__dict__
        }

    def refuse_price_changes(self):
        """Raises PriceChangeRefused if a price of this row differs from the database's."""
        if self.pk is None:
            return
        stored = dict(getattr(self, "_stored_prices", {}))
        if self._state.adding or stored.keys() != self.PRICES:
            row = type(self)._default_manager.filter(pk=self.pk).values(*self.PRICES).first()
            if row is None:
                return  # a new row: its first prices are no change
            stored = row
        changed = {
            name
            for name in self.PRICES
            if name in self.__dict__ and _differs(self.__dict__[name], stored[name])
        }
        if changed:
            raise PriceChangeRefused(_refusal(f"{type(self).__name__} {self}", changed))


def _differs(value, stored) -> bool:
    if isinstance(stored, str):  # a name, not a number
        return str(value) != stored
    return Decimal(str(value)) != Decimal(stored)


class Line(PricesOutOfSave):
    """A line: the route class a token calls through, with its own price multiplier."""

    PRICES = frozenset({"multiplier"})

    name = models.SlugField(max_length=50, unique=True)
    description = models.CharField(max_length=300, blank=True)
    multiplier = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Line multiplier: every price on this line is multiplied by it.",
    )
    requires_grant = models.BooleanField(
        default=False, help_text="Only users with a staff grant may use this line."
    )
    is_active = models.BooleanField(default=True)
    position = models.PositiveIntegerField(default=0, help_text="Order in lists.")

    class Meta:
        ordering = ["position", "name"]

    def __str__(self):
        return self.name

    @classmethod
    def available_to(cls, user):
        """The active lines this user may use: open ones, and those granted to them."""
        lines = cls.objects.filter(is_active=True)
        if user is None or not user.is_authenticated:
            return lines.filter(requires_grant=False)
        granted = LineGrant.objects.filter(user=user).values("line_id")
        return lines.filter(Q(requires_grant=False) | Q(pk__in=granted))

    @staticmethod
    def shown_first(lines, wanted=None):
        """Of `lines`, the one whose prices a page shows: the one named `wanted`, else
        "default", else the first (None when there are none)."""
        by_name = {line.name: line for line in lines}
        return by_name.get(wanted) or by_name.get("default") or next(iter(lines), None)

    def is_available_to(self, user):
        if not self.is_active:
            return False
        if not self.requires_grant:
            return True
        return self.grants.filter(user=user).exists()


class LineGrant(models.Model):
    """Staff let one user call through a line that needs a grant."""

    line = models.ForeignKey(Line, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="line_grants"
    )
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["line", "user"], name="one_grant_per_user_and_line")
        ]

    def __str__(self):
        return f"{self.user} may use {self.line}"


# The vendors' published prices of prompt caching, relative to their input price: a cached read,
# a write kept 5 minutes, a write kept 1 hour. OpenAI, Google and DeepSeek do not charge writes.
VENDOR_CACHE_RATES = {
    "anthropic": ("0.1", "1.25", "2"),
    "openai": ("0.5", "1", "1"),
    "google": ("0.25", "1", "1"),
    "deepseek": ("0.1", "1", "1"),
}


class ModelPrice(PricesOutOfSave):
    """The published price of one model: token multipliers, or a fixed price per call."""

    # With the prices, what decides which of them a request pays: which model a row prices,
    # and whether per token or per call (a model switched to per call with no call price would
    # be free at once). Those two are set when the row is created, and stay.
    PRICES = frozenset(
        {"model_multiplier", "completion_multiplier", "call_price", *PART_MULTIPLIERS}
        | {"model", "pricing"}
    )

    class Pricing(models.TextChoices):
        TOKENS = "tokens", "Per token"
        PER_CALL = "per_call", "Per call"

    class Kind(models.TextChoices):
        CHAT = "chat", "Chat and completions"
        EMBEDDING = "embedding", "Embeddings"
        IMAGE = "image", "Images"

    model = models.CharField(max_length=100, unique=True, help_text="Public model name.")
    vendor = models.CharField(max_length=50, help_text="Who makes the model, e.g. OpenAI.")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CHAT)
    pricing = models.CharField(max_length=10, choices=Pricing.choices, default=Pricing.TOKENS)
    model_multiplier = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal(0))],
        help_text="1 = $2 per million prompt tokens.",
    )
    completion_multiplier = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Price of a completion token relative to a prompt token.",
    )
    call_price = models.BigIntegerField(
        default=0,
        validators=[MinValueValidator(0)],
        help_text="Micro-dollars per call, for models priced per call.",
    )
    cache_read_multiplier = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(1))],
        help_text="Price of a cached input token read, relative to an input token (at most 1).",
    )
    cache_write_5m_multiplier = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Price of an input token written to the cache for 5 minutes, relative to an "
        "input token.",
    )
    cache_write_1h_multiplier = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Price of an input token written to the cache for 1 hour, relative to an "
        "input token.",
    )
    audio_input_multiplier = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Price of an audio input token, relative to a text input token.",
    )
    audio_output_multiplier = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Price of an audio output token, relative to a text output token.",
    )
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    # The multipliers of the parts of a usage priced apart, as CostBreakdown names them.
    PART_MULTIPLIERS = PART_MULTIPLIERS

    class Meta:
        ordering = ["vendor", "model"]
        permissions = [("set_prices", "Can change model and line prices (multipliers)")]

    def __str__(self):
        return self.model

    @property
    def is_per_call(self):
        return self.pricing == self.Pricing.PER_CALL

    @classmethod
    def example_chat_model(cls):
        """The cheapest chat model on sale, for ready-to-run examples."""
        return (
            cls.objects.filter(enabled=True, kind=cls.Kind.CHAT)
            .order_by("model_multiplier", "model")
            .values_list("model", flat=True)
            .first()
            or "gpt-4o-mini"
        )

    @classmethod
    def vendor_cache_rates(cls, vendor):
        """The vendor's published cache prices relative to its input price, as multipliers:
        {field: value}; empty for a vendor whose ratios we do not know (all stay 1)."""
        read, write_5m, write_1h = VENDOR_CACHE_RATES.get(vendor.strip().lower(), (1, 1, 1))
        return {
            "cache_read_multiplier": Decimal(read),
            "cache_write_5m_multiplier": Decimal(write_5m),
            "cache_write_1h_multiplier": Decimal(write_1h),
        }

    def parts_per_million(self, line_multiplier=Decimal(1)):
        """Micro-dollars per million tokens of each part priced apart, by name: cache_read,
        cache_write_5m, cache_write_1h, audio_input, audio_output."""
        base = self.model_multiplier * line_multiplier
        output = base * self.completion_multiplier
        return {
            "cache_read": per_million(base * self.cache_read_multiplier),
            "cache_write_5m": per_million(base * self.cache_write_5m_multiplier),
            "cache_write_1h": per_million(base * self.cache_write_1h_multiplier),
            "audio_input": per_million(base * self.audio_input_multiplier),
            "audio_output": per_million(output * self.audio_output_multiplier),
        }

    @property
    def prices_audio(self):
        """Whether audio costs other than text on this model."""
        return self.audio_input_multiplier != 1 or self.audio_output_multiplier != 1

    def prices_on(self, line_multiplier=Decimal(1)):
        """What this model costs on a line of this multiplier, as the pages show it: per 1M
        tokens of each kind, or per call (micro-dollars)."""
        if self.is_per_call:
            per_call = call_cost(call_price=self.call_price, line_multiplier=line_multiplier)
            return {
                "price": self,
                "input": None,
                "output": None,
                "parts": {},
                "per_call": per_call.cost,
            }
        return {
            "price": self,
            "input": self.input_per_million(line_multiplier),
            "output": self.output_per_million(line_multiplier),
            "parts": self.parts_per_million(line_multiplier),
            "per_call": None,
        }

    def input_per_million(self, line_multiplier=Decimal(1)):
        return per_million(self.model_multiplier * line_multiplier)

    def output_per_million(self, line_multiplier=Decimal(1)):
        return per_million(self.model_multiplier * self.completion_multiplier * line_multiplier)


class PriceAdjustment(models.Model):
    """A recorded change of a multiplier or per-call price: old → new, from a given time."""

    class Field(models.TextChoices):
        MODEL_MULTIPLIER = "model_multiplier", "Model multiplier"
        COMPLETION_MULTIPLIER = "completion_multiplier", "Completion multiplier"
        CALL_PRICE = "call_price", "Price per call"
        LINE_MULTIPLIER = "line_multiplier", "Line multiplier"
        CACHE_READ_MULTIPLIER = "cache_read_multiplier", "Cache read multiplier"
        CACHE_WRITE_5M_MULTIPLIER = "cache_write_5m_multiplier", "Cache write (5 min) multiplier"
        CACHE_WRITE_1H_MULTIPLIER = "cache_write_1h_multiplier", "Cache write (1 h) multiplier"
        AUDIO_INPUT_MULTIPLIER = "audio_input_multiplier", "Audio input multiplier"
        AUDIO_OUTPUT_MULTIPLIER = "audio_output_multiplier", "Audio output multiplier"

    model_price = models.ForeignKey(
        ModelPrice, null=True, blank=True, on_delete=models.CASCADE, related_name="adjustments"
    )
    line = models.ForeignKey(
        Line, null=True, blank=True, on_delete=models.CASCADE, related_name="adjustments"
    )
    field = models.CharField(max_length=32, choices=Field.choices)
    old_value = models.DecimalField(
        max_digits=20, decimal_places=6, help_text="A multiplier, or micro-dollars per call."
    )
    new_value = models.DecimalField(max_digits=20, decimal_places=6)
    effective_at = models.DateTimeField(default=timezone.now)
    applied_at = models.DateTimeField(
        null=True, blank=True, help_text="When the new value took effect; empty while scheduled."
    )
    reason = models.CharField(max_length=500)
    batch = models.CharField(
        max_length=32, db_index=True, help_text="Adjustments made together share a batch."
    )
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    announcement = models.ForeignKey(
        "announcements.Announcement",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="price_adjustments",
        help_text="Where it was published.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(model_price__isnull=False) & Q(line__isnull=True))
                | (Q(model_price__isnull=True) & Q(line__isnull=False)),
                name="adjustment_targets_a_model_or_a_line",
            )
        ]
        indexes = [models.Index(fields=["applied_at", "effective_at"], name="adjustment_due")]
        permissions = [("publish_prices", "Can publish price changes (emails subscribers)")]

    def __str__(self):
        return f"{self.target}: {self.get_field_display()} {self.old_value} → {self.new_value}"

    @property
    def target(self):
        return self.model_price or self.line

    @staticmethod
    def new_batch():
        return secrets.token_hex(8)


@receiver(pre_save, sender=Line)
@receiver(pre_save, sender=ModelPrice)
def refuse_fixture_price_changes(sender, instance, raw=False, **kwargs):
    """loaddata saves rows "raw", past save(): its fixture may add a price, not change one."""
    if raw:
        instance.refuse_price_changes()


class BonusTier(models.Model):
    """From a cumulative recharged amount on, each recharge earns a bonus percentage."""

    threshold = models.BigIntegerField(
        unique=True,
        validators=[MinValueValidator(0)],
        help_text="Cumulative recharges (micro-dollars) from which this tier applies.",
    )
    percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Bonus credited on top of each recharge, in percent.",
    )

    class Meta:
        ordering = ["threshold"]

    def __str__(self):
        return f"+{self.percent}% from {self.threshold}"


class BillingSettings(models.Model):
    """Thresholds staff set for the enterprise-discount note on the recharge page."""

    enterprise_recharge_threshold = models.BigIntegerField(
        default=5_000 * 1_000_000,
        help_text="Cumulative recharges (micro-dollars) from which we suggest a discount.",
    )
    enterprise_daily_spend_threshold = models.BigIntegerField(
        default=200 * 1_000_000,
        help_text="Daily spend (micro-dollars) from which we suggest a discount.",
    )

    class Meta:
        verbose_name = "billing settings"
        verbose_name_plural = "billing settings"

    def __str__(self):
        return "Billing settings"

    @classmethod
    def load(cls):
        return cls.objects.get_or_create(pk=1)[0]


class RechargeOrder(models.Model):
    """A payment that credits the balance once: pending → paid → credited."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PAID = "paid", "Paid"
        CREDITED = "credited", "Credited"
        FAILED = "failed", "Failed"
        REFUNDED = "refunded", "Refunded"
        EXPIRED = "expired", "Expired"
        # Staff asked for a refund; the provider has not answered yet. What it takes back is
        # held on the balance meanwhile (`refund_held`).
        REFUNDING = "refunding", "Refund pending"

    number = models.CharField(max_length=24, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="recharge_orders"
    )
    amount = models.BigIntegerField(help_text="Micro-dollars paid.")
    bonus = models.BigIntegerField(default=0, help_text="Micro-dollars credited on top.")
    provider = models.CharField(max_length=20)
    provider_reference = models.CharField(max_length=255, blank=True, db_index=True)
    payment_reference = models.CharField(
        max_length=255, blank=True, help_text="The provider's id of the payment, for refunds."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    failure_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    credited_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    refunded_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    refunded_amount = models.BigIntegerField(default=0)
    refund_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="When staff asked for the refund that is pending."
    )
    refund_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Who asked for the refund that is pending.",
    )
    refund_held = models.BigIntegerField(
        default=0,
        db_default=0,  # rows inserted by code that predates the column
        help_text="Micro-dollars held on the balance while the refund is pending: "
        "what it takes back once the provider has refunded.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="order_user_recent"),
            models.Index(fields=["status", "created_at"], name="order_status_age"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="order_amount_positive"),
            models.CheckConstraint(condition=Q(bonus__gte=0), name="order_bonus_not_negative"),
        ]
        permissions = [
            ("credit_order", "Can credit a recharge order by hand"),
            ("refund_order", "Can refund a recharge order"),
            ("fail_order", "Can mark a recharge order failed"),
            ("export_orders", "Can export recharge orders as CSV"),
        ]

    def __str__(self):
        return self.number

    def get_absolute_url(self):
        return reverse("billing:order", args=[self.number])

    @property
    def total(self):
        return self.amount + self.bonus

    @property
    def is_open(self):
        return self.status in {self.Status.PENDING, self.Status.PAID}

    def is_late(self, now=None):
        """Pending or paid but not credited for more than the normal delay."""
        now = now or timezone.now()
        return self.is_open and now - self.created_at > settings.RECHARGE_LATE_AFTER

    @staticmethod
    def new_number():
        # Unambiguous characters only, so that an order number read aloud or typed is right.
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        tail = "".join(secrets.choice(alphabet) for _ in range(6))
        return f"R{timezone.now():%Y%m%d}-{tail}"


class PaymentEvent(models.Model):
    """Every payment callback we received and what we did with it, for staff."""

    class Outcome(models.TextChoices):
        CREDITED = "credited", "Credited"
        FAILED = "failed", "Marked failed"
        EXPIRED = "expired", "Marked expired"
        ALREADY_DONE = "already_done", "Order already settled"
        REPLAY = "replay", "Replayed event"
        UNKNOWN_ORDER = "unknown_order", "Unknown order"
        AMOUNT_MISMATCH = "amount_mismatch", "Amount does not match"
        BAD_SIGNATURE = "bad_signature", "Bad or missing signature"
        IGNORED = "ignored", "Ignored event type"

    provider = models.CharField(max_length=20)
    # NULL, not "", when there is no trustworthy id (a forged callback, a reconciliation), so
    # that the uniqueness of real event ids ignores those rows.
    event_id = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    event_type = models.CharField(max_length=100, blank=True)
    order = models.ForeignKey(
        RechargeOrder, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    detail = models.CharField(max_length=500, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            # The first delivery of an event claims its id; later ones are replays.
            models.UniqueConstraint(
                fields=["provider", "event_id"],
                condition=Q(event_id__isnull=False) & ~Q(outcome="replay"),
                name="payment_event_once",
            )
        ]

    def __str__(self):
        return f"{self.provider} {self.event_id or '(unsigned)'}: {self.outcome}"


class OrderAction(models.Model):
    """A staff action on an order, with who and why."""

    class Action(models.TextChoices):
        CREDIT = "credit", "Credited by hand"
        MARK_FAILED = "mark_failed", "Marked failed"
        REFUND = "refund", "Refunded"
        REFUND_FAILED = "refund_failed", "Refund failed at the provider"

    order = models.ForeignKey(RechargeOrder, on_delete=models.CASCADE, related_name="actions")
    action = models.CharField(max_length=16, choices=Action.choices)
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.CharField(max_length=500)
    detail = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.get_action_display()} {self.order} by {self.staff_user}"


class RedemptionBatch(models.Model):
    """Codes staff made together, each worth the same amount."""

    name = models.CharField(max_length=100)
    amount = models.BigIntegerField(validators=[MinValueValidator(1)], help_text="Micro-dollars.")
    count = models.PositiveIntegerField()
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "redemption batches"
        permissions = [
            ("issue_codes", "Can issue redemption codes"),
            ("void_codes", "Can withdraw unused redemption codes"),
        ]

    def __str__(self):
        return self.name


class RedemptionCode(models.Model):
    """A code worth an amount, redeemable once. Stored as a hash, like API keys."""

    batch = models.ForeignKey(RedemptionBatch, on_delete=models.CASCADE, related_name="codes")
    code_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=8, help_text="Last characters, to tell codes apart.")
    redeemed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="redeemed_codes",
    )
    redeemed_at = models.DateTimeField(null=True, blank=True)
    voided = models.BooleanField(default=False)

    def __str__(self):
        return f"…{self.hint}"


class Hold(CountersOutOfSave, models.Model):
    """Money a gateway process holds on an account (token empty) or on a token's quota.

    The process spends from its hold in memory and settles in batches; the row exists so that
    if the process dies, a periodic job gives the money back after `expires_at`.
    """

    COUNTERS = frozenset({"amount", "expires_at"})

    owner = models.CharField(max_length=100, help_text="The gateway process holding it.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    token = models.ForeignKey(
        "tokens.Token", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    amount = models.BigIntegerField(default=0, help_text="Micro-dollars held.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "user"],
                condition=Q(token__isnull=True),
                name="one_account_hold_per_owner",
            ),
            models.UniqueConstraint(
                fields=["owner", "token"],
                condition=Q(token__isnull=False),
                name="one_quota_hold_per_owner",
            ),
            models.CheckConstraint(condition=Q(amount__gte=0), name="hold_not_negative"),
        ]

    def __str__(self):
        target = f"token {self.token_id}" if self.token_id else f"user {self.user_id}"
        return f"{self.amount} held on {target} by {self.owner}"


class TokenQuota(models.Model):
    """The money side of an API token: its quota limit and the two counters billing keeps.

    The table is tokens.Token's, and the token app owns the token (key, line, limits, allowlists)
    and its migrations. But a limited token's quota is money: the gateway holds it and settles it
    as it does a balance, with guarded F() updates that billing alone writes (quota_held when a
    lease is taken, given back or reaped; quota_used and quota_held when usage is settled).
    Billing sits below tokens in the layers and does not import it, so it reads and writes those
    columns through this model, which names only them. Not managed: no migration of billing
    changes the table. tokens.Token lists the same columns in its COUNTERS, so no form or admin
    save writes them back.
    """

    unlimited_quota = models.BooleanField()
    quota_limit = models.BigIntegerField(null=True)
    quota_used = models.BigIntegerField()
    quota_held = models.BigIntegerField()

    class Meta:
        managed = False
        db_table = "tokens_token"

    def __str__(self):
        return f"Quota of token {self.pk}"

    def save(self, *args, **kwargs):
        raise TypeError(
            "A token quota changes only through the guarded updates of billing.holds; "
            "the token itself is tokens.Token."
        )


class UnsettledUsage(models.Model):
    """Usage of one account that the database refused to settle: log rows and what they cost.

    The gateway process that served the requests keeps them (in memory and in its journal) and
    tries again with a growing pause; a row here tells staff what waits and why, until it is
    settled. Its money stays held meanwhile, so it cannot be spent twice.
    """

    owner = models.CharField(max_length=100, help_text="The gateway process that keeps it.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    requests = models.PositiveIntegerField(help_text="Log rows waiting to be written.")
    amount = models.BigIntegerField(help_text="Micro-dollars those requests cost.")
    error = models.CharField(max_length=500, help_text="What the database said, last time.")
    attempts = models.PositiveIntegerField(default=1)
    first_refused_at = models.DateTimeField(default=timezone.now)
    last_refused_at = models.DateTimeField(default=timezone.now)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_refused_at"]
        verbose_name_plural = "unsettled usage"
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "user"],
                condition=Q(settled_at__isnull=True),
                name="one_open_unsettled_usage_per_owner",
            )
        ]

    def __str__(self):
        return f"{self.requests} requests of {self.user} waiting since {self.first_refused_at}"
