import zoneinfo

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.utils import timezone

from console.lib.counters import CountersOutOfSave


def time_zone_choices():
    return [(name, name.replace("_", " ")) for name in sorted(zoneinfo.available_timezones())]


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email, password, **fields):
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **fields):
        fields.setdefault("is_staff", False)
        fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **fields)

    def create_superuser(self, email, password=None, **fields):
        fields["is_staff"] = True
        fields["is_superuser"] = True
        return self._create_user(email, password, **fields)


class User(AbstractBaseUser, PermissionsMixin):
    """A person who signs in to the console. Email is the login."""

    email = models.EmailField("email address", unique=True)
    name = models.CharField(max_length=150, blank=True)
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        help_text="Dashboards and logs show times in this zone.",
    )
    is_staff = models.BooleanField(default=False, help_text="Can sign in to the staff admin.")
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)
    last_login_ip = models.GenericIPAddressField(
        null=True, blank=True, help_text="A sign-in from another address sends a security notice."
    )

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = []

    class Meta:
        ordering = ["email"]

    def __str__(self):
        return self.email

    def get_full_name(self):
        return self.name or self.email

    def get_short_name(self):
        return self.name or self.email.split("@")[0]


class NotificationSettings(CountersOutOfSave, models.Model):
    """Which emails a user wants. Security notices are on unless switched off."""

    # Set by the settlement when a balance falls below the threshold.
    COUNTERS = frozenset({"low_balance_alerted"})

    class PriceScope(models.TextChoices):
        ALL = "all", "Every model"
        CHOSEN = "chosen", "Only the vendors and models I choose"

    user = models.OneToOneField(
        User, on_delete=models.CASCADE, primary_key=True, related_name="notifications"
    )
    price_emails = models.BooleanField(default=False)
    price_scope = models.CharField(max_length=8, choices=PriceScope.choices, default=PriceScope.ALL)
    price_vendors = models.JSONField(default=list, blank=True)
    price_models = models.JSONField(default=list, blank=True)
    maintenance_emails = models.BooleanField(default=False)
    security_emails = models.BooleanField(default=True)
    low_balance_emails = models.BooleanField(default=False)
    low_balance_threshold = models.BigIntegerField(
        default=5_000_000, help_text="Micro-dollars; an alert when the balance falls below it."
    )
    low_balance_alerted = models.BooleanField(
        default=False, help_text="Alerted for the current fall; cleared when back above."
    )
    announcements_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "notification settings"
        indexes = [
            models.Index(
                fields=["user"], name="price_subscribers", condition=models.Q(price_emails=True)
            )
        ]

    def __str__(self):
        return f"Notifications of {self.user}"

    @classmethod
    def of(cls, user):
        return cls.objects.get_or_create(user=user)[0]

    def wants_price_email(self, vendors, models_):
        if not self.price_emails:
            return False
        if self.price_scope == self.PriceScope.ALL:
            return True
        return bool(set(vendors) & set(self.price_vendors) or set(models_) & set(self.price_models))


class EmailDelivery(models.Model):
    """One email to one recipient, claimed before sending so that a retried task never sends
    it twice. `key` names the message: the same key and recipient is the same email."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (unsubscribed)"

    key = models.CharField(max_length=200)
    recipient = models.EmailField()
    template = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(
        max_length=100, blank=True, help_text="The task sending it, to resume after a crash."
    )
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "email deliveries"
        constraints = [
            models.UniqueConstraint(fields=["key", "recipient"], name="one_delivery_per_recipient")
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="delivery_status_age")]

    def __str__(self):
        return f"{self.template} to {self.recipient}: {self.status}"
