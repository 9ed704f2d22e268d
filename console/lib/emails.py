"""Sending email: three templates per email, one delivery row per recipient.

`send_once` is what Celery tasks call. It claims the (key, recipient) delivery row with a
guarded update, sends, and marks it sent, so that a task run twice, or retried after a crash,
does not send the same email again. A failure is recorded on the row and raised, for the task
to retry with backoff.
"""

from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.utils import timezone

from console.models import EmailDelivery

# A claim older than this is taken to belong to a worker that died while sending.
STALE_CLAIM = timedelta(minutes=10)


def render_email(template, context):
    context = {"site_name": settings.SITE_NAME, "site_url": settings.SITE_URL, **context}
    subject = render_to_string(f"emails/{template}-subject.html", context)
    text = render_to_string(f"emails/{template}-body-text.html", context)
    html = render_to_string(f"emails/{template}-body-html.html", context)
    return " ".join(subject.split()), text, html


def send_now(template, *, to, context, headers=None):
    subject, text, html = render_email(template, context)
    message = EmailMultiAlternatives(
        subject, text, settings.DEFAULT_FROM_EMAIL, [to], headers=headers
    )
    message.attach_alternative(html, "text/html")
    message.send()


def send_once(key, template, *, to, context, headers=None):
    """Sends the email named `key` to `to` unless it was sent already. True if sent now."""
    delivery, _created = EmailDelivery.objects.get_or_create(
        key=key, recipient=to, defaults={"template": template}
    )
    now = timezone.now()
    claimable = Q(status__in=[EmailDelivery.Status.PENDING, EmailDelivery.Status.FAILED]) | Q(
        status=EmailDelivery.Status.SENDING, claimed_at__lt=now - STALE_CLAIM
    )
    claimed = EmailDelivery.objects.filter(claimable, pk=delivery.pk).update(
        status=EmailDelivery.Status.SENDING, claimed_at=now, attempts=F("attempts") + 1
    )
    if not claimed:
        return False
    try:
        send_now(template, to=to, context=context, headers=headers)
    except Exception as error:
        EmailDelivery.objects.filter(pk=delivery.pk).update(
            status=EmailDelivery.Status.FAILED, last_error=str(error)[:500]
        )
        raise
    EmailDelivery.objects.filter(pk=delivery.pk).update(
        status=EmailDelivery.Status.SENT, sent_at=timezone.now(), last_error=""
    )
    return True
