"""Announcements and support tickets: what the console's views and admin do to them.

Publishing an announcement commits it, then a Celery task fans the email out in batches of
recipients, each batch a task of its own: a hundred thousand subscribers are a few hundred
tasks, none of them in the publishing transaction. Every recipient has a delivery row, so a
batch that runs again, or resumes after its worker died, sends to nobody twice.

A ticket's status changes only here, under a row lock, with the times that follow from it;
every reply or status change the other side should hear of is emailed once, on commit.
"""

import time
import uuid
from collections import defaultdict
from contextlib import contextmanager

from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import NotificationSettings, User
from billing.models import ModelPrice, PriceAdjustment
from billing.pricing import per_million
from console.lib import emails, unsubscribe
from console.lib.background import enqueue_on_commit
from console.lib.money import format_usd
from console.models import Announcement, Ticket, TicketAttachment, TicketMessage

BATCH_SIZE = 500
EMAIL_KINDS = {Announcement.Kind.PRICE: "price", Announcement.Kind.MAINTENANCE: "maintenance"}


def announcement_publish(*, announcement, when=None):
    """Publishes a draft (now, or at `when`) and emails the subscribers of its kind."""
    with transaction.atomic():
        first_time = announcement.published_at is None
        announcement.published_at = announcement.published_at or when or timezone.now()
        announcement.save(update_fields=["published_at", "body_html", "updated_at"])
        if first_time and announcement.email_subscribers and announcement.kind in EMAIL_KINDS:
            from console.tasks import fan_out_announcement

            enqueue_on_commit(fan_out_announcement, announcement.pk)
    return announcement


def price_adjustments_publish(*, adjustments, staff_user, note=""):
    """One announcement for a set of price adjustments: each change with the old and new
    price per million tokens, and when it takes effect."""
    adjustments = list(
        PriceAdjustment.objects.filter(pk__in=[a.pk for a in adjustments])
        .select_related("model_price", "group")
        .order_by("effective_at", "id")
    )
    if not adjustments:
        raise ValueError("no adjustments to publish")
    body = _price_body(adjustments, note)
    names = sorted({str(a.target) for a in adjustments})
    title = (
        "Price change: "
        + ", ".join(names[:3])
        + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    )
    with transaction.atomic():
        announcement = Announcement.objects.create(
            title=title[:200], kind=Announcement.Kind.PRICE, body=body, created_by=staff_user
        )
        PriceAdjustment.objects.filter(pk__in=[a.pk for a in adjustments]).update(
            announcement=announcement
        )
        announcement_publish(announcement=announcement)
    return announcement


def _price_body(adjustments, note):
    by_model, by_group = defaultdict(dict), defaultdict(dict)
    for adjustment in adjustments:
        target = (
            by_model[adjustment.model_price]
            if adjustment.model_price
            else by_group[adjustment.group]
        )
        target[adjustment.field] = adjustment
    when = min(a.effective_at for a in adjustments)
    local = timezone.localtime(when)
    lines = []
    if note:
        lines += [note.strip(), ""]
    lines.append(
        f"These prices change on **{local:%Y-%m-%d %H:%M} ({local.tzname()})**"
        + ("." if when > timezone.now() else ", and apply from then.")
    )
    lines.append("")
    if by_model:
        lines += ["| Model | Change | Input per 1M tokens | Output per 1M tokens |",
                  "|---|---|---|---|"]  # fmt: skip
        for price, changes in sorted(by_model.items(), key=lambda item: item[0].model):
            lines.append(_model_row(price, changes))
        lines.append("")
    for group, changes in sorted(by_group.items(), key=lambda item: item[0].name):
        change = changes[PriceAdjustment.Field.GROUP_MULTIPLIER]
        lines.append(
            f"- Line **{group.name}**: group multiplier {_num(change.old_value)} → "
            f"{_num(change.new_value)}; every price on the line changes by that factor."
        )
    lines += ["", "Your request log keeps the multipliers each request was charged with."]
    return "\n".join(lines)


def _model_row(price, changes):
    Field = PriceAdjustment.Field

    def values(which):
        def value(field, current):
            change = changes.get(field)
            return getattr(change, which) if change else current

        return (
            value(Field.MODEL_MULTIPLIER, price.model_multiplier),
            value(Field.COMPLETION_MULTIPLIER, price.completion_multiplier),
            value(Field.CALL_PRICE, price.call_price),
        )

    old_mm, old_cm, old_call = values("old_value")
    new_mm, new_cm, new_call = values("new_value")
    described = "; ".join(
        f"{change.get_field_display().lower()} {_num(change.old_value, change.field)} → "
        f"{_num(change.new_value, change.field)}"
        for change in changes.values()
    )
    if price.pricing == ModelPrice.Pricing.PER_CALL:
        per_call = f"{format_usd(int(old_call))} → {format_usd(int(new_call))} per call"
        return f"| {price.model} | {described} | {per_call} | |"
    old_in, new_in = per_million(old_mm), per_million(new_mm)
    old_out, new_out = per_million(old_mm * old_cm), per_million(new_mm * new_cm)
    return (
        f"| {price.model} | {described} | {format_usd(old_in)} → {format_usd(new_in)} | "
        f"{format_usd(old_out)} → {format_usd(new_out)} |"
    )


def _num(value, field=None):
    if field == PriceAdjustment.Field.CALL_PRICE:
        return format_usd(int(value))
    return format(value.normalize(), "f")


# Delivery


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
    adjustments = announcement.price_adjustments.select_related("model_price", "group")
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
    from django.db.models import Count

    from console.models import EmailDelivery

    rows = (
        EmailDelivery.objects.filter(key=f"announcement:{announcement.pk}")
        .values("status")
        .annotate(n=Count("id"))
    )
    return {row["status"]: row["n"] for row in rows}


# Support tickets

CLOSED = {Ticket.Status.RESOLVED, Ticket.Status.CLOSED}
WAITS_FOR_STAFF = {Ticket.Status.OPEN, Ticket.Status.WAITING_STAFF}


class TicketClosed(Exception):
    """A user wrote to a ticket that is closed; they must reopen it first."""


def ticket_open(*, user, form):
    """Creates a ticket with its first message and attachments; staff hear of it by email."""
    from console.tasks import send_ticket_email

    data = form.cleaned_data
    category = data["category"]
    with _stored(data["attachments"]) as files, transaction.atomic():
        ticket = _new_ticket(
            user=user,
            subject=data["subject"],
            category=category,
            order=data["order"] if category == Ticket.Category.RECHARGE else None,
            token=data["token"] if category == Ticket.Category.CHARGES else None,
            request_id=data["request_id"],
            details=form.details(),
            waiting_since=timezone.now(),
        )
        message = _add_message(ticket, user, data["message"], files)
        enqueue_on_commit(send_ticket_email, ticket.pk, message.pk, "new")
    return ticket


def ticket_reply(*, ticket, author, body, attachments=(), internal=False):
    """A message in the thread. A user's reply waits for staff, staff's for the user; the
    other side hears of it by email. Internal notes change nothing and email nobody."""
    from console.tasks import send_ticket_email

    staff = author.is_staff and author.pk != ticket.user_id
    with _stored(attachments) as files, transaction.atomic():
        # Locked, so that a reply and a status change at the same moment see each other.
        ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
        if not staff and ticket.is_closed:
            raise TicketClosed(ticket.number)
        message = _add_message(ticket, author, body, files, staff=staff, internal=internal)
        if not internal:
            waiting = Ticket.Status.WAITING_USER if staff else Ticket.Status.WAITING_STAFF
            _set_status(ticket, waiting)
            enqueue_on_commit(send_ticket_email, ticket.pk, message.pk, "reply")
    return message


def ticket_set_status(*, ticket, status, by, notify=True):
    """Closes, resolves or reopens a ticket. The user hears of staff's changes, except that
    a ticket now waits for them: a reply says that better."""
    from console.tasks import send_ticket_status_email

    with transaction.atomic():
        ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
        if ticket.status == status:
            return ticket
        _set_status(ticket, status)
        staff = by.is_staff and by.pk != ticket.user_id
        if notify and staff and status != Ticket.Status.WAITING_USER:
            enqueue_on_commit(send_ticket_status_email, ticket.pk, status, int(time.time() * 1000))
    return ticket


def _set_status(ticket, status):
    """The status, with the times that follow from it: since when staff owe an answer (kept
    while they still do), and when the ticket closed."""
    now = timezone.now()
    ticket.status = status
    ticket.closed_at = (ticket.closed_at or now) if status in CLOSED else None
    ticket.waiting_since = (ticket.waiting_since or now) if status in WAITS_FOR_STAFF else None
    ticket.save(update_fields=["status", "closed_at", "waiting_since", "updated_at"])


def _new_ticket(**fields):
    """A ticket under a fresh random number (drawn again in the rare case it is taken)."""
    for attempt in range(5):
        try:
            with transaction.atomic():
                return Ticket.objects.create(number=Ticket.new_number(), **fields)
        except IntegrityError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


@contextmanager
def _stored(attachments):
    """Writes checked attachments to storage before the transaction that records them, and
    deletes them again if it fails: no file without its row, and no database lock held while
    files are written."""
    saved = []
    try:
        for content, content_type, name, size in attachments:
            path = default_storage.save(f"{TicketAttachment.FOLDER}/{content.name}", content)
            saved.append((path, content_type, name, size))
        yield saved
    except BaseException:
        for path, *_rest in saved:
            default_storage.delete(path)
        raise


def _add_message(ticket, author, body, files, *, staff=False, internal=False):
    message = TicketMessage.objects.create(
        ticket=ticket, author=author, from_staff=staff, internal=internal, body=body
    )
    TicketAttachment.objects.bulk_create(
        TicketAttachment(
            message=message, file=path, original_name=name, content_type=content_type, size=size
        )
        for path, content_type, name, size in files
    )
    return message
