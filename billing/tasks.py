from celery import shared_task

from billing import services


@shared_task
def reconcile_orders():
    return services.orders_reconcile()


@shared_task
def apply_due_price_adjustments():
    return services.price_adjustments_apply_due()
