import ipaddress
from dataclasses import dataclass

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from console.lib.counters import CountersOutOfSave
from tokens import keys


@dataclass(frozen=True)
class TokenStatus:
    code: str  # active, disabled, expired, quota_used_up, line_not_granted
    label: str
    explanation: str
    badge: str

    @property
    def usable(self):
        return self.code == "active"


class TokenQuerySet(models.QuerySet):
    def alive(self):
        return self.filter(deleted_at__isnull=True)

    def of_owner(self, user):
        """The user's tokens that are not deleted, with their line: what a page may show."""
        return self.alive().select_related("line").filter(user=user)


def granted_line_ids(user):
    """The ids of the lines granted to `user`, for Token.status_for_owner."""
    return set(user.line_grants.values_list("line_id", flat=True))


class Token(CountersOutOfSave, models.Model):
    """An API key of a user, with its own optional quota and restrictions."""

    # Written by the gateway's settlement and log writer only.
    COUNTERS = frozenset({"quota_used", "quota_held", "last_used_at", "last_ip"})

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens"
    )
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    key_prefix = models.CharField(max_length=8, help_text="The first characters of the key.")
    key_suffix = models.CharField(max_length=4, help_text="The last characters of the key.")
    unlimited_quota = models.BooleanField(
        default=True, help_text="Spend from the balance alone, with no limit of its own."
    )
    quota_limit = models.BigIntegerField(
        null=True, blank=True, help_text="Micro-dollars this token may spend, when limited."
    )
    quota_used = models.BigIntegerField(default=0, help_text="Micro-dollars spent so far.")
    quota_held = models.BigIntegerField(
        default=0, help_text="Micro-dollars of the quota held for requests in flight."
    )
    line = models.ForeignKey("billing.Line", on_delete=models.PROTECT, related_name="tokens")
    allowed_models = models.JSONField(
        default=list, blank=True, help_text="Model names; empty means every model of the line."
    )
    ip_allowlist = models.JSONField(
        default=list, blank=True, help_text="Addresses or CIDR ranges; empty means any address."
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    rotated_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_ip = models.GenericIPAddressField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = TokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"], name="token_user_recent")]
        constraints = [
            models.CheckConstraint(
                condition=Q(unlimited_quota=True) | Q(quota_limit__gt=0),
                name="limited_token_has_a_limit",
            ),
            models.CheckConstraint(
                condition=Q(quota_used__gte=0) & Q(quota_held__gte=0),
                name="token_quota_not_negative",
            ),
        ]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("logs:token", args=[self.pk])

    @property
    def masked_key(self):
        return f"{self.key_prefix}…{self.key_suffix}"

    def set_key(self, key):
        self.key_hash = keys.hash_key(key)
        self.key_prefix = key[: len(keys.PREFIX) + 4]
        self.key_suffix = key[-4:]

    @property
    def is_expired(self):
        return self.expires_at is not None and self.expires_at <= timezone.now()

    def networks(self):
        return [ipaddress.ip_network(entry, strict=False) for entry in self.ip_allowlist]

    def status_for_owner(self, granted_line_ids):
        """`status()` given the ids of the lines granted to the token's owner."""
        line = self.line
        usable = line.is_active and (not line.requires_grant or line.pk in granted_line_ids)
        return self.status(line_granted=usable)

    def status(self, line_granted=None):
        """What a user needs to know about whether this token works, and what to do if not."""
        if not self.enabled:
            return TokenStatus(
                "disabled", "Disabled", "Switched off. Enable it to use it again.", "danger"
            )
        if self.is_expired:
            return TokenStatus(
                "expired",
                "Expired",
                "Past its expiry date. Edit it to extend the expiry, or create a new token.",
                "danger",
            )
        if not self.unlimited_quota and self.quota_limit - self.quota_used <= 0:
            return TokenStatus(
                "quota_used_up",
                "Quota used up",
                "This token spent its own limit, even if your balance has money. "
                "Raise the limit or set it to unlimited quota.",
                "warn",
            )
        if line_granted is None:
            line_granted = self.line.is_available_to(self.user)
        if not line_granted:
            return TokenStatus(
                "line_not_granted",
                "Line not granted",
                f"The line “{self.line}” needs a grant you no longer have. "
                "Move the token to another line, or ask support.",
                "warn",
            )
        return TokenStatus("active", "Active", "Ready to use.", "ok")
