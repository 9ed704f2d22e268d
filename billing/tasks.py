from celery import shared_task

from billing import services
from billing.alerts import send_low_balance_alert  # noqa: F401 (a task for the worker)


@shared_task
def reconcile_orders():
    return services.orders_reconcile()


@shared_task
def apply_due_price_adjustments():
    return services.price_adjustments_apply_due()
