"""Emailing an announcement to the users subscribed to its kind.

A task fans the email out in batches of recipients, each batch a task of its own: a hundred
thousand subscribers are a few hundred tasks, none of them in the publishing transaction.
Every recipient has a delivery row, so a batch that runs again, or resumes after its worker
died, sends to nobody twice.
"""

import uuid

from django.db.models import Count

from accounts import emails
from accounts.models import EmailDelivery, NotificationSettings, User
from billing.models import ModelPrice
from console.announcements.models import Announcement
from console.lib import unsubscribe

BATCH_SIZE = 500
EMAIL_KINDS = {Announcement.Kind.PRICE: "price", Announcement.Kind.MAINTENANCE: "maintenance"}


def recipients(announcement, after=0, limit=BATCH_SIZE):
    """The next ids of users subscribed to this announcement's kind, in id order."""
    kind = EMAIL_KINDS[announcement.kind]
    field = unsubscribe.KINDS[kind][0]
    return list(
        NotificationSettings.objects.filter(
            **{field: True}, user__is_active=True, user_id__gt=after
        )
        .order_by("user_id")
        .values_list("user_id", flat=True)[:limit]
    )


def deliver_batch(*, announcement_id, user_ids, claimer=""):
    """Emails one batch of subscribers. Repeat-safe; returns (sent, skipped)."""
    announcement = Announcement.objects.get(pk=announcement_id)
    kind = EMAIL_KINDS[announcement.kind]
    key = f"announcement:{announcement.pk}"
    changed = _changed_targets(announcement)
    users = list(
        User.objects.filter(pk__in=user_ids, is_active=True)
        .select_related("notifications")
        .order_by("pk")
    )
    wanted, skipped = [], 0
    for user in users:
        prefs = user.notifications
        if announcement.kind == Announcement.Kind.PRICE:
            subscribed = prefs.wants_price_email(*changed)
            unsubscribed = not prefs.price_emails
        else:
            subscribed = unsubscribed = getattr(prefs, unsubscribe.KINDS[kind][0])
            unsubscribed = not unsubscribed
        if subscribed:
            wanted.append(user)
        else:
            skipped += 1
            if unsubscribed:  # since the fan-out: counted for staff
                emails.skip(key, user.email, "announcement", "unsubscribed")
    claimer = claimer or uuid.uuid4().hex
    claimed = emails.claim_many(
        key, [user.email for user in wanted], "announcement", claimer=claimer
    )
    sent = 0
    connection = emails.open_connection()
    try:
        for user in wanted:
            delivery = claimed.pop(user.email, None)
            if delivery is None:
                continue
            link = unsubscribe.unsubscribe_url(user, kind)
            context = {
                "announcement": announcement,
                "user": user,
                "unsubscribe_url": link,
                "kind_label": unsubscribe.KINDS[kind][1],
            }
            subject, text, html = emails.render_email("announcement", context)
            emails.deliver(
                delivery,
                subject,
                text,
                html,
                headers=unsubscribe.headers(user, kind, link),
                connection=connection,
            )
            sent += 1
    finally:
        connection.close()
        # Claimed but not reached (the mail server failed first): free for the retry.
        emails.release(key, list(claimed), claimer=claimer)
    return sent, skipped


def _changed_targets(announcement):
    """(vendors, models) a price announcement is about, for subscribers who chose some."""
    adjustments = announcement.price_adjustments.select_related("model_price", "line")
    vendors, models = set(), set()
    for adjustment in adjustments:
        if adjustment.model_price:
            vendors.add(adjustment.model_price.vendor)
            models.add(adjustment.model_price.model)
        else:  # a line's multiplier moves every model on it
            vendors.update(ModelPrice.objects.values_list("vendor", flat=True))
            models.update(ModelPrice.objects.values_list("model", flat=True))
    return vendors, models


def delivery_counts(announcement):
    """{status: how many} of the emails of an announcement, for staff."""
    rows = (
        EmailDelivery.objects.filter(key=f"announcement:{announcement.pk}")
        .values("status")
        .annotate(n=Count("id"))
    )
    return {row["status"]: row["n"] for row in rows}
