"""Ticket emails: a new ticket or a user's reply to staff, staff's reply or status change to
the user. Each is sent once, whatever the number of times Celery runs it."""

from celery import shared_task
from django.conf import settings

from accounts import emails
from console.support.models import Ticket, TicketMessage


# Celery names are those the tasks had in console.tasks, so that messages queued before
# they moved here still run.
@shared_task(name="console.tasks.send_ticket_email", bind=True, **emails.RETRY)
def send_ticket_email(self, ticket_id, message_id, event):
    """A new ticket or a user's reply goes to staff; a staff reply goes to the user."""
    ticket = Ticket.objects.select_related("user", "order").filter(pk=ticket_id).first()
    message = TicketMessage.objects.filter(
        pk=message_id, ticket_id=ticket_id, internal=False
    ).first()
    if ticket is None or message is None:
        return False
    context = {"ticket": ticket, "message": message, "event": event}
    if message.from_staff:
        return emails.send_once(
            f"ticket:{ticket_id}:message:{message_id}",
            "ticket-reply",
            to=ticket.user.email,
            context=context,
            claimer=self.request.id or "",
        )
    return emails.send_once(
        f"ticket:{ticket_id}:message:{message_id}",
        "ticket-staff",
        to=settings.SUPPORT_EMAIL,
        context=context,
        claimer=self.request.id or "",
    )


@shared_task(name="console.tasks.send_ticket_status_email", bind=True, **emails.RETRY)
def send_ticket_status_email(self, ticket_id, status, stamp):
    ticket = Ticket.objects.select_related("user").filter(pk=ticket_id).first()
    if ticket is None:
        return False
    return emails.send_once(
        f"ticket:{ticket_id}:status:{stamp}",
        "ticket-status",
        to=ticket.user.email,
        context={"ticket": ticket, "status": Ticket.Status(status).label},
        claimer=self.request.id or "",
    )
