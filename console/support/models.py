"""Support tickets: a thread of messages between a user and staff, with attachments."""

from datetime import timedelta

from django.db import models, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone


class Ticket(models.Model):
    """A support request: a thread of messages between a user and staff."""

    class Category(models.TextChoices):
        RECHARGE = "recharge", "Recharge not credited"
        CHARGES = "charges", "Abnormal charges"
        API_ERRORS = "api_errors", "API errors"
        LINE_ACCESS = "line_access", "Line access (training or enterprise)"
        DISCOUNTS = "discounts", "Discounts and invoices"
        ACCOUNT = "account", "Account"
        OTHER = "other", "Other"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        WAITING_STAFF = "waiting_staff", "Waiting for staff"
        WAITING_USER = "waiting_user", "Waiting for you"
        RESOLVED = "resolved", "Resolved"
        CLOSED = "closed", "Closed"

    number = models.CharField(max_length=16, unique=True)
    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="tickets")
    subject = models.CharField(max_length=200)
    category = models.CharField(max_length=12, choices=Category.choices)
    status = models.CharField(max_length=14, choices=Status.choices, default=Status.OPEN)
    order = models.ForeignKey(
        "billing.RechargeOrder",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tickets",
    )
    token = models.ForeignKey(
        "tokens.Token", null=True, blank=True, on_delete=models.SET_NULL, related_name="tickets"
    )
    request_id = models.UUIDField(null=True, blank=True, help_text="A request log id, if any.")
    details = models.JSONField(default=dict, blank=True, help_text="What the form asked.")
    assigned_to = models.ForeignKey(
        "accounts.User",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        limit_choices_to={"is_staff": True},
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    waiting_since = models.DateTimeField(
        null=True, blank=True, help_text="When the user last wrote and staff have not answered."
    )
    closed_at = models.DateTimeField(null=True, blank=True)

    REOPEN_DAYS = 30

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-updated_at"], name="ticket_user_recent"),
            models.Index(fields=["status", "waiting_since"], name="ticket_waiting"),
        ]

    def __str__(self):
        return f"{self.number}: {self.subject}"

    def get_absolute_url(self):
        return reverse("console:ticket", args=[self.number])

    @property
    def is_closed(self):
        return self.status in {self.Status.RESOLVED, self.Status.CLOSED}

    def can_reopen(self, now=None):
        if not self.is_closed or self.closed_at is None:
            return False
        return (now or timezone.now()) - self.closed_at <= timedelta(days=self.REOPEN_DAYS)

    @staticmethod
    def new_number():
        import secrets

        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        return "T-" + "".join(secrets.choice(alphabet) for _ in range(8))


class TicketMessage(models.Model):
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(
        "accounts.User", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    from_staff = models.BooleanField(default=False)
    internal = models.BooleanField(default=False, help_text="A staff note the user never sees.")
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self):
        return f"{self.ticket.number} message {self.pk}"


class TicketAttachment(models.Model):
    """A file a user or staff attached, checked by content and stored under a random name,
    outside the public static files (on local disk or in a private bucket: settings.STORAGES);
    only the ticket's owner and staff can fetch it, through the site."""

    FOLDER = "ticket-attachments"

    message = models.ForeignKey(TicketMessage, on_delete=models.CASCADE, related_name="attachments")
    file = models.FileField(upload_to=FOLDER + "/")
    original_name = models.CharField(max_length=200)
    content_type = models.CharField(max_length=50)
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.original_name


@receiver(post_delete, sender=TicketAttachment)
def _delete_attachment_file(sender, instance, **kwargs):
    # With its ticket or its user, the file goes too (from the disk or the bucket), only once
    # the deletion is committed. A storage that fails then is logged, and does not turn the
    # deletion that already happened into an error.
    name, storage = instance.file.name, instance.file.storage
    if name:
        transaction.on_commit(lambda: storage.delete(name), robust=True)
