"""Emails to a user about their account: django-allauth's, and the notice of a new sign-in."""

from datetime import UTC, datetime

from celery import shared_task

from accounts import emails
from accounts.models import NotificationSettings, User
from console.lib import unsubscribe


# Celery names are those the tasks had in console.tasks, so that messages queued before
# they moved here still run.
@shared_task(name="console.tasks.send_account_email", bind=True, **emails.RETRY)
def send_account_email(self, key, to, subject, text, html):
    """An email of django-allauth (verification, password reset), rendered in the request."""
    return emails.send_rendered_once(
        key, to=to, subject=subject, text=text, html=html, claimer=self.request.id or ""
    )


@shared_task(name="console.tasks.send_sign_in_notice", bind=True, **emails.RETRY)
def send_sign_in_notice(self, user_id, ip, agent, stamp):
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
