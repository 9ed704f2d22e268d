from django.db import models
from django.utils import timezone


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


class Announcement(models.Model):
    """News for every user: price adjustments, maintenance, anything else. Public once
    published; written by staff in Markdown, stored also as sanitised HTML."""

    class Kind(models.TextChoices):
        PRICE = "price", "Price adjustment"
        MAINTENANCE = "maintenance", "Maintenance"
        GENERAL = "general", "General"

    title = models.CharField(max_length=200)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.GENERAL)
    body = models.TextField(
        help_text="Markdown. Scripts, event handlers and unsafe links are removed."
    )
    body_html = models.TextField(editable=False, blank=True)
    pinned = models.BooleanField(default=False, help_text="Shown above the others.")
    published_at = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="Empty while a draft."
    )
    starts_at = models.DateTimeField(null=True, blank=True, help_text="Maintenance: from.")
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Maintenance: until.")
    email_subscribers = models.BooleanField(
        default=True, help_text="Email the users subscribed to this kind when published."
    )
    created_by = models.ForeignKey(
        "accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-pinned", "-published_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(starts_at__isnull=True)
                | models.Q(ends_at__isnull=True)
                | models.Q(ends_at__gt=models.F("starts_at")),
                name="maintenance_ends_after_it_starts",
            )
        ]

    def __str__(self):
        return self.title

    def save(self, *args, **kwargs):
        from console.lib.markdown import render_markdown

        self.body_html = render_markdown(self.body)
        super().save(*args, **kwargs)

    def get_absolute_url(self):
        from django.urls import reverse

        return reverse("console:announcement", args=[self.pk])

    @property
    def is_published(self):
        return self.published_at is not None and self.published_at <= timezone.now()
