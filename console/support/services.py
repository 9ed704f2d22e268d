"""Support tickets: what the support pages and the staff admin do to them.

A ticket's status changes only here, under a row lock, with the times that follow from it;
every reply or status change the other side should hear of is emailed once, on commit.
"""

import time
from contextlib import contextmanager

from django.db import IntegrityError, transaction
from django.utils import timezone

from console.lib.background import enqueue_on_commit
from console.support.models import Ticket, TicketAttachment, TicketMessage
from console.support.tasks import send_ticket_email, send_ticket_status_email

CLOSED = {Ticket.Status.RESOLVED, Ticket.Status.CLOSED}
WAITS_FOR_STAFF = {Ticket.Status.OPEN, Ticket.Status.WAITING_STAFF}


class TicketClosed(Exception):
    """A user wrote to a ticket that is closed; they must reopen it first."""


def ticket_open(*, user, form):
    """Creates a ticket with its first message and attachments; staff hear of it by email."""
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
    files are written (to a bucket, that is a round trip each)."""
    storage = TicketAttachment.file.field.storage
    saved = []
    try:
        for content, content_type, name, size in attachments:
            path = storage.save(f"{TicketAttachment.FOLDER}/{content.name}", content)
            saved.append((path, content_type, name, size))
        yield saved
    except BaseException:
        for path, *_rest in saved:
            storage.delete(path)
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
