from datetime import UTC, datetime

from celery import shared_task

from console import services
from console.lib import emails, unsubscribe
from console.models import Announcement

RETRY = {"autoretry_for": (Exception,), "retry_backoff": 30, "retry_backoff_max": 3600,
         "max_retries": 12}  # fmt: skip


@shared_task
def fan_out_announcement(announcement_id):
    """Splits the subscribers of an announcement into batch tasks. Safe to run again."""
    announcement = Announcement.objects.filter(pk=announcement_id).first()
    if announcement is None or announcement.kind not in services.EMAIL_KINDS:
        return 0
    batches, after = 0, 0
    while ids := services.recipients(announcement, after=after):
        send_announcement_batch.delay(announcement_id, ids)
        batches += 1
        after = ids[-1]
    return batches


@shared_task(bind=True, **RETRY)
def send_announcement_batch(self, announcement_id, user_ids):
    sent, _skipped = services.deliver_batch(
        announcement_id=announcement_id, user_ids=user_ids, claimer=self.request.id or ""
    )
    return sent


@shared_task(bind=True, **RETRY)
def send_account_email(self, key, to, subject, text, html):
    """An email of django-allauth (verification, password reset), rendered in the request."""
    return emails.send_rendered_once(
        key, to=to, subject=subject, text=text, html=html, claimer=self.request.id or ""
    )


@shared_task(bind=True, **RETRY)
def send_low_balance_alert(self, user_id, stamp):
    from accounts.models import NotificationSettings, User
    from billing.models import Account

    user = User.objects.filter(pk=user_id, is_active=True).first()
    prefs = NotificationSettings.objects.filter(user_id=user_id, low_balance_emails=True).first()
    if user is None or prefs is None:
        return False
    return emails.send_once(
        f"low-balance:{user_id}:{stamp}",
        "low-balance",
        to=user.email,
        context={
            "user": user,
            "threshold": prefs.low_balance_threshold,
            "balance": Account.objects.get(user=user).balance,
            "unsubscribe_url": unsubscribe.unsubscribe_url(user, "low_balance"),
        },
        headers=unsubscribe.headers(user, "low_balance"),
        claimer=self.request.id or "",
    )


@shared_task(bind=True, **RETRY)
def send_sign_in_notice(self, user_id, ip, agent, stamp):
    from accounts.models import NotificationSettings, User

    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None or not NotificationSettings.of(user).security_emails:
        return False
    return emails.send_once(
        f"sign-in:{user_id}:{stamp}",
        "sign-in",
        to=user.email,
        context={
            "user": user,
            "ip": ip,
            "agent": agent,
            "at": datetime.fromtimestamp(stamp / 1000, tz=UTC),
            "unsubscribe_url": unsubscribe.unsubscribe_url(user, "security"),
        },
        claimer=self.request.id or "",
    )


@shared_task(bind=True, **RETRY)
def send_ticket_email(self, ticket_id, message_id, event):
    """A new ticket or a user's reply goes to staff; a staff reply goes to the user."""
    from django.conf import settings

    from console.models import Ticket, TicketMessage

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


@shared_task(bind=True, **RETRY)
def send_ticket_status_email(self, ticket_id, status, stamp):
    from console.models import Ticket

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
