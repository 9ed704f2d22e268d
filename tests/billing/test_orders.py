from datetime import timedelta

import pytest
from django.utils import timezone

from billing import services
from billing.models import BonusTier, OrderAction, RechargeOrder
from tests.conftest import balance_of, ledger_sum

Status = RechargeOrder.Status


def make_order(user, amount=20_000_000, provider="sandbox", **fields):
    order = services.order_create(user=user, amount=amount, provider=provider)
    if fields:
        RechargeOrder.objects.filter(pk=order.pk).update(**fields)
        order.refresh_from_db()
    return order


def test_an_order_is_credited_once_with_its_bonus(alice):
    BonusTier.objects.create(threshold=0, percent=10)
    order = make_order(alice)
    assert order.bonus == 2_000_000
    assert order.number.startswith("R")
    assert services.order_credit(order=order) is True
    assert services.order_credit(order=order) is False
    order.refresh_from_db()
    assert order.status == Status.CREDITED
    assert order.paid_at and order.credited_at
    assert balance_of(alice) == 22_000_000 == ledger_sum(alice)
    kinds = list(order.entries.order_by("id").values_list("kind", "amount"))
    assert kinds == [("recharge", 20_000_000), ("bonus", 2_000_000)]
    assert alice.account.__class__.objects.get(user=alice).total_recharged == 20_000_000


@pytest.mark.parametrize("amount", [0, 999_999, 10_000_000_001])
def test_an_order_outside_the_limits_is_refused(alice, amount):
    with pytest.raises(services.BillingError, match=r"between \$1.00 and \$10,000.00"):
        services.order_create(user=alice, amount=amount, provider="sandbox")


def test_staff_credit_a_late_order_by_hand_with_a_reason(alice, charlie):
    order = make_order(alice, created_at=timezone.now() - timedelta(minutes=30))
    assert order.is_late()
    with pytest.raises(services.BillingError, match="reason"):
        services.order_credit(order=order, staff_user=charlie, reason="")
    assert services.order_credit(order=order, staff_user=charlie, reason="bank statement seen")
    action = OrderAction.objects.get(order=order)
    assert (action.action, action.staff_user, action.reason) == (
        "credit",
        charlie,
        "bank statement seen",
    )
    entry = order.entries.get()
    assert entry.staff_user == charlie
    assert not order.is_late()


def test_a_refund_takes_the_credit_back(alice, charlie):
    order = make_order(alice)
    services.order_credit(order=order)
    services.order_refund(order=order, staff_user=charlie, reason="customer asked")
    order.refresh_from_db()
    assert order.status == Status.REFUNDED
    assert order.refunded_amount == 20_000_000
    assert balance_of(alice) == 0 == ledger_sum(alice)
    assert order.actions.get().action == "refund"


def test_a_refund_beyond_the_balance_is_refused_unless_forced(alice, charlie):
    order = make_order(alice)
    services.order_credit(order=order)
    services.balance_charge(user=alice, amount=15_000_000, kind="usage")
    with pytest.raises(services.RefundRefused, match=r"available balance is \$5.00"):
        services.order_refund(order=order, staff_user=charlie, reason="chargeback")
    assert balance_of(alice) == 5_000_000
    services.order_refund(order=order, staff_user=charlie, reason="chargeback", force=True)
    order.refresh_from_db()
    assert order.refunded_amount == 5_000_000
    assert balance_of(alice) == 0 == ledger_sum(alice)
    assert "Took back $5.00 of $20.00" in order.actions.get().detail


def test_only_a_credited_order_can_be_refunded(alice, charlie):
    order = make_order(alice)
    with pytest.raises(services.OrderStateError, match="only a credited order"):
        services.order_refund(order=order, staff_user=charlie, reason="x")


def test_marking_failed_needs_a_pending_order(alice, charlie):
    order = make_order(alice)
    services.order_mark_failed(order=order, staff_user=charlie, reason="card declined")
    assert order.status == Status.FAILED
    with pytest.raises(services.OrderStateError):
        services.order_mark_failed(order=order, staff_user=charlie, reason="again")


def test_reconciling_expires_abandoned_orders_and_is_repeat_safe(alice):
    old = make_order(alice, created_at=timezone.now() - timedelta(days=2))
    fresh = make_order(alice)
    assert services.orders_reconcile(dry_run=True)["expired"] == 1
    old.refresh_from_db()
    assert old.status == Status.PENDING
    assert services.orders_reconcile()["expired"] == 1
    assert services.orders_reconcile()["expired"] == 0
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert old.status == Status.EXPIRED
    assert fresh.status == Status.PENDING


def test_a_payment_for_an_expired_order_is_still_credited(alice):
    from billing.providers import PaymentUpdate

    order = make_order(alice)
    services.order_expire(order=order)
    update = PaymentUpdate("evt_1", "payment.succeeded", order.number, "paid", order.amount)
    event = services.payment_event_handle(provider="sandbox", update=update)
    assert event.outcome == "credited"
    assert balance_of(alice) == 20_000_000
