from celery import shared_task

from accounts import emails
from accounts.models import NotificationSettings, User
from billing import services
from billing.models import Account
from console.lib import unsubscribe


@shared_task
def reconcile_orders():
    return services.orders_reconcile()


@shared_task
def apply_due_price_adjustments():
    return services.price_adjustments_apply_due()


@shared_task(bind=True, **emails.RETRY)
def send_low_balance_alert(self, user_id, stamp):
    """Queued by billing.alerts when a balance falls below the user's threshold."""
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
