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
