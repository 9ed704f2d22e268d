"""Sending email: three templates per email, one delivery row per recipient.

Every app sends email to users (accounts its security notices, billing its low-balance
alerts, the feature apps theirs), so the mailer lives with the users, in the lowest app.

Emails leave from Celery tasks, queued when the transaction that caused them commits. Each
(message key, recipient) has an EmailDelivery row, claimed with a guarded update before the
email goes out and marked sent right after, so that a task that runs twice does not send
twice. A task killed while sending resumes its own claims when Celery runs it again (the claim
names the task); a claim left by anyone else is taken over only once it is stale. Each email
carries a Message-ID made from its delivery row, the same if it is ever sent again.
"""

import hashlib
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, mailers
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.utils import timezone

from accounts.models import EmailDelivery

# How an email task retries while the mail server is down: twelve times, up to an hour apart.
RETRY = {"autoretry_for": (Exception,), "retry_backoff": 30, "retry_backoff_max": 3600,
         "max_retries": 12}  # fmt: skip
# A claim older than this is taken to belong to a worker that died while sending.
STALE_CLAIM = timedelta(minutes=10)
Status = EmailDelivery.Status


def render_email(template, context):
    """(subject, text, html) of `templates/emails/<template>-…html`."""
    context = {"site_name": settings.SITE_NAME, "site_url": settings.SITE_URL, **context}
    subject = render_to_string(f"emails/{template}-subject.html", context)
    text = render_to_string(f"emails/{template}-body-text.html", context)
    html = render_to_string(f"emails/{template}-body-html.html", context)
    return " ".join(subject.split()), text, html


def _message_id(delivery):
    digest = hashlib.sha256(f"{delivery.key}|{delivery.recipient}".encode()).hexdigest()[:20]
    domain = settings.DEFAULT_FROM_EMAIL.rsplit("@", 1)[-1].strip(">").strip() or "localhost"
    return f"<{delivery.pk}.{digest}@{domain}>"


def claim(key, recipient, template, *, claimer=""):
    """The delivery row of (key, recipient), claimed for sending now; None if it was sent,
    skipped, or is being sent by someone else."""
    delivery, _created = EmailDelivery.objects.get_or_create(
        key=key, recipient=recipient, defaults={"template": template}
    )
    now = timezone.now()
    claimable = Q(status__in=[Status.PENDING, Status.FAILED]) | Q(
        status=Status.SENDING, claimed_at__lt=now - STALE_CLAIM
    )
    if claimer:
        claimable |= Q(status=Status.SENDING, claimed_by=claimer)
    taken = EmailDelivery.objects.filter(claimable, pk=delivery.pk).update(
        status=Status.SENDING, claimed_at=now, claimed_by=claimer, attempts=F("attempts") + 1
    )
    return delivery if taken else None


def claim_many(key, recipients, template, *, claimer):
    """The delivery rows of (key, each recipient) claimed for sending now, in two statements:
    {recipient: delivery}. Rows already sent, skipped, or fresh in someone else's hands are
    left out; rows an earlier run of the same `claimer` left half-done are taken back."""
    EmailDelivery.objects.bulk_create(
        [EmailDelivery(key=key, recipient=r, template=template) for r in recipients],
        ignore_conflicts=True,
    )
    now = timezone.now()
    claimable = (
        Q(status__in=[Status.PENDING, Status.FAILED])
        | Q(status=Status.SENDING, claimed_at__lt=now - STALE_CLAIM)
        | Q(status=Status.SENDING, claimed_by=claimer)
    )
    rows = EmailDelivery.objects.filter(key=key, recipient__in=recipients)
    rows.filter(claimable).update(
        status=Status.SENDING, claimed_at=now, claimed_by=claimer, attempts=F("attempts") + 1
    )
    return {d.recipient: d for d in rows.filter(status=Status.SENDING, claimed_by=claimer)}


def release(key, recipients, *, claimer):
    """Gives back claims that were not used, so that anyone may send them."""
    if recipients:
        EmailDelivery.objects.filter(
            key=key, recipient__in=recipients, status=Status.SENDING, claimed_by=claimer
        ).update(status=Status.PENDING, claimed_by="")


def deliver(delivery, subject, text, html, *, headers=None, connection=None):
    """Sends a claimed delivery and records the outcome. Raises what the mail server raised."""
    message = EmailMultiAlternatives(
        subject,
        text,
        settings.DEFAULT_FROM_EMAIL,
        [delivery.recipient],
        headers={"Message-ID": _message_id(delivery), **(headers or {})},
        connection=connection,
    )
    message.attach_alternative(html, "text/html")
    try:
        message.send()
    except Exception as error:
        EmailDelivery.objects.filter(pk=delivery.pk).update(
            status=Status.FAILED, last_error=str(error)[:500]
        )
        raise
    EmailDelivery.objects.filter(pk=delivery.pk).update(
        status=Status.SENT, sent_at=timezone.now(), last_error=""
    )


def skip(key, recipient, template, reason):
    """Records that a recipient was not emailed (unsubscribed since), for staff's counts."""
    EmailDelivery.objects.update_or_create(
        key=key,
        recipient=recipient,
        defaults={"template": template, "status": Status.SKIPPED, "last_error": reason[:500]},
    )


def send_once(key, template, *, to, context, headers=None, claimer=""):
    """Renders and sends the email named `key` to `to` unless it went already. True if sent."""
    delivery = claim(key, to, template, claimer=claimer)
    if delivery is None:
        return False
    subject, text, html = render_email(template, context)
    deliver(delivery, subject, text, html, headers=headers)
    return True


def send_rendered_once(key, *, to, subject, text, html, claimer=""):
    """The same, for an email rendered elsewhere (django-allauth's)."""
    delivery = claim(key, to, "account", claimer=claimer)
    if delivery is None:
        return False
    deliver(delivery, subject, text, html)
    return True


def open_connection():
    """One SMTP connection for a batch of emails."""
    return mailers.default
