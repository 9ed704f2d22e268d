"""Low-balance alerts: once when a balance falls below the user's threshold, and again only
after it has been back above it."""

import time

from django.db.models import F, OuterRef, Subquery

from accounts.models import NotificationSettings
from billing.models import Account
from console.lib.background import enqueue_on_commit

# By name: billing.tasks imports the services that call this module.
SEND_ALERT = "billing.tasks.send_low_balance_alert"


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
            enqueue_on_commit(SEND_ALERT, user_id, stamp)
    return fallen


def low_balance_reset(user_id):
    """After a credit: the next fall below the threshold alerts again."""
    balance = Account.objects.filter(user_id=user_id).values_list("balance", flat=True).first()
    if balance is not None:
        NotificationSettings.objects.filter(
            user_id=user_id, low_balance_alerted=True, low_balance_threshold__lte=balance
        ).update(low_balance_alerted=False)
