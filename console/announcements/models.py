"""Announcements: news for every user, some of them emailed to the subscribers of their kind."""

from django.db import models
from django.urls import reverse
from django.utils import timezone

from console.lib.markdown import render_markdown


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
        permissions = [("publish_announcement", "Can publish an announcement (emails subscribers)")]

    def __str__(self):
        return self.title

    def save(self, *args, **kwargs):
        self.body_html = render_markdown(self.body)
        super().save(*args, **kwargs)

    def get_absolute_url(self):
        return reverse("console:announcement", args=[self.pk])

    @property
    def is_published(self):
        return self.published_at is not None and self.published_at <= timezone.now()
