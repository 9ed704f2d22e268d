"""Low-balance alerts: once when a balance falls below the user's threshold, and again only
after it has been back above it."""

import time

from celery import shared_task
from django.db.models import F, OuterRef, Subquery

from accounts import emails
from accounts.models import NotificationSettings, User
from billing.models import Account
from console.lib import unsubscribe
from console.lib.background import enqueue_on_commit


def low_balance_check(user_ids):
    """After charges: flags and alerts the users who just fell below their threshold.
    Call inside the transaction that charged them."""
    balance = Account.objects.filter(user_id=OuterRef("user_id")).values("balance")[:1]
    fallen = list(
        NotificationSettings.objects.filter(
            user_id__in=list(user_ids), low_balance_emails=True, low_balance_alerted=False
        )
        .annotate(balance=Subquery(balance))
        .filter(low_balance_threshold__gt=F("balance"))
        .values_list("user_id", flat=True)
    )
    stamp = int(time.time() * 1000)
    for user_id in fallen:
        if NotificationSettings.objects.filter(user_id=user_id, low_balance_alerted=False).update(
            low_balance_alerted=True
        ):
            enqueue_on_commit(send_low_balance_alert, user_id, stamp)
    return fallen


def low_balance_reset(user_id):
    """After a credit: the next fall below the threshold alerts again."""
    balance = Account.objects.filter(user_id=user_id).values_list("balance", flat=True).first()
    if balance is not None:
        NotificationSettings.objects.filter(
            user_id=user_id, low_balance_alerted=True, low_balance_threshold__lte=balance
        ).update(low_balance_alerted=False)


# Here rather than in billing.tasks, which imports the services that import this module. Its
# Celery name is the one it had in console.tasks, so that messages queued before still run.
@shared_task(bind=True, name="console.tasks.send_low_balance_alert", **emails.RETRY)
def send_low_balance_alert(self, user_id, stamp):
    """Queued when a balance falls below the user's threshold."""
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
