"""Refunds in three steps: the order is marked pending and its money held, the provider is asked
with no transaction open, and the money is taken back (or released) once it answered."""

from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone

from billing import services
from billing.models import Account, OrderAction, RechargeOrder
from billing.providers import get_provider
from tests.conftest import balance_of, ledger_sum

Status = RechargeOrder.Status

# The provider is asked from another thread's point of view: the rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


class WhileRefunding(list):
    """Stands for the fake Stripe's list of refunds: runs `look()` as each refund request
    arrives, in the fake server's thread, with a database connection of its own, while the
    code under test waits for Stripe's answer. What `look()` returned is in `seen`."""

    def __init__(self, look):
        super().__init__()
        self.look = look
        self.seen = []

    def append(self, form):
        try:
            self.seen.append(self.look())
        finally:
            connection.close()
        super().append(form)


def credited_card_order(user, fake_stripe):
    order = services.order_create(user=user, amount=20_000_000, provider="stripe")
    get_provider("stripe").start(order, request=None)
    session = fake_stripe.pay(order.provider_reference)
    services.order_credit(order=order, payment_reference=session["payment_intent"])
    order.refresh_from_db()
    return order


def held_of(user):
    return Account.objects.get(user=user).held


def test_while_stripe_refunds_the_order_is_pending_and_its_money_held(alice, charlie, fake_stripe):
    order = credited_card_order(alice, fake_stripe)

    def look():
        pending = RechargeOrder.objects.get(pk=order.pk)
        account = Account.objects.get(user=alice)
        return pending.status, pending.refund_requested_by_id, account.held, account.available

    fake_stripe.refunds = WhileRefunding(look)
    services.order_refund(order=order, staff_user=charlie, reason="asked")
    assert fake_stripe.refunds.seen == [(Status.REFUNDING, charlie.pk, 20_000_000, 0)]
    assert order.status == Status.REFUNDED
    assert order.refunded_amount == 20_000_000
    assert (order.refund_held, held_of(alice)) == (0, 0)
    assert balance_of(alice) == 0 == ledger_sum(alice)
    assert order.actions.get().action == OrderAction.Action.REFUND


@pytest.mark.postgres
def test_no_row_is_locked_while_stripe_refunds(alice, charlie, fake_stripe):
    order = credited_card_order(alice, fake_stripe)

    def look():
        try:
            with transaction.atomic():
                Account.objects.select_for_update(nowait=True).get(user=alice)
                RechargeOrder.objects.select_for_update(nowait=True).get(pk=order.pk)
        except DatabaseError as error:
            return f"locked: {error}"
        return "free"

    fake_stripe.refunds = WhileRefunding(look)
    services.order_refund(order=order, staff_user=charlie, reason="asked")
    assert fake_stripe.refunds.seen == ["free"]
    assert balance_of(alice) == 0 == ledger_sum(alice)


def test_a_second_refund_while_one_is_pending_is_refused_and_stripe_refunds_once(
    alice, charlie, fake_stripe
):
    order = credited_card_order(alice, fake_stripe)

    def second_click():
        with pytest.raises(services.OrderStateError, match="waiting for the payment provider"):
            services.order_refund(order=order, staff_user=charlie, reason="clicked again")
        return "refused"

    fake_stripe.refunds = WhileRefunding(second_click)
    services.order_refund(order=order, staff_user=charlie, reason="asked")
    assert fake_stripe.refunds.seen == ["refused"]
    assert len(fake_stripe.refunds) == 1
    assert order.entries.filter(kind="refund").count() == 1
    assert balance_of(alice) == 0 == ledger_sum(alice)


DECLINED = (
    400,
    {"type": "invalid_request_error", "code": "charge_disputed", "message": "Disputed."},
)


def test_when_stripe_declines_the_order_is_credited_again_and_staff_are_told(
    alice, charlie, fake_stripe
):
    order = credited_card_order(alice, fake_stripe)
    fake_stripe.refund_error = DECLINED
    with pytest.raises(services.RefundFailed, match="Card \\(Stripe\\) did not refund it") as e:
        services.order_refund(order=order, staff_user=charlie, reason="asked")
    assert "Disputed." in str(e.value)
    assert "Nothing was taken back; the order is credited again." in str(e.value)
    order.refresh_from_db()
    assert order.status == Status.CREDITED
    assert (order.refund_requested_at, order.refund_held, order.refunded_amount) == (None, 0, 0)
    assert (balance_of(alice), held_of(alice)) == (20_000_000, 0)
    failure = order.actions.get()
    assert (failure.action, failure.staff_user, failure.detail) == (
        "refund_failed",
        charlie,
        "Disputed.",
    )


def test_after_a_decline_the_refund_is_asked_again_with_a_key_of_its_own(
    alice, charlie, fake_stripe
):
    order = credited_card_order(alice, fake_stripe)
    fake_stripe.refund_error = DECLINED
    with pytest.raises(services.RefundFailed):
        services.order_refund(order=order, staff_user=charlie, reason="asked")
    fake_stripe.refund_error = None
    services.order_refund(order=order, staff_user=charlie, reason="asked again")
    assert order.status == Status.REFUNDED
    assert len(fake_stripe.refunds) == 1
    # Stripe answers a repeated key with its first answer: the second attempt has its own.
    assert fake_stripe.refund_keys == [f"refund-{order.number}-0", f"refund-{order.number}-1"]
    assert balance_of(alice) == 0 == ledger_sum(alice)
    actions = list(order.actions.order_by("id").values_list("action", flat=True))
    assert actions == ["refund_failed", "refund"]


def test_when_stripe_does_not_answer_the_refund_stays_pending_with_its_money_held(
    alice, charlie, fake_stripe, settings
):
    # Stripe may have refunded: crediting the order again would give the money twice.
    order = credited_card_order(alice, fake_stripe)
    working = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens there
    with pytest.raises(services.RefundFailed, match="whether it refunded is unknown") as e:
        services.order_refund(order=order, staff_user=charlie, reason="asked")
    assert "refund it again in 15 minutes" in str(e.value)
    order.refresh_from_db()
    assert (order.status, order.refund_held) == (Status.REFUNDING, 20_000_000)
    assert (balance_of(alice), held_of(alice)) == (20_000_000, 20_000_000)
    assert not order.actions.exists()

    settings.STRIPE_API_BASE = working
    RechargeOrder.objects.filter(pk=order.pk).update(  # time passes
        refund_requested_at=timezone.now() - timedelta(minutes=20)
    )
    services.order_refund(order=order, staff_user=charlie, reason="asked again")
    assert order.status == Status.REFUNDED
    assert fake_stripe.refund_keys == [f"refund-{order.number}-0"]  # the same attempt
    assert (balance_of(alice), held_of(alice)) == (0, 0)
    assert ledger_sum(alice) == 0


def test_a_refund_stripe_already_made_is_finished(alice, charlie, fake_stripe):
    order = credited_card_order(alice, fake_stripe)
    fake_stripe.refund_error = (
        400,
        {"type": "invalid_request_error", "code": "charge_already_refunded", "message": "Done."},
    )
    services.order_refund(order=order, staff_user=charlie, reason="asked")
    assert order.status == Status.REFUNDED
    assert balance_of(alice) == 0 == ledger_sum(alice)


def leave_pending(order, staff, *, minutes_ago):
    """What a process that died between the steps leaves: the order pending, its money held."""
    asked = timezone.now() - timedelta(minutes=minutes_ago)
    RechargeOrder.objects.filter(pk=order.pk).update(
        status=Status.REFUNDING,
        refund_requested_at=asked,
        refund_requested_by=staff,
        refund_held=order.total,
    )
    Account.objects.filter(user=order.user).update(held=F("held") + order.total)


def test_a_refund_left_pending_by_a_dead_process_is_finished_when_asked_again_later(
    alice, charlie, fake_stripe
):
    order = credited_card_order(alice, fake_stripe)
    leave_pending(order, charlie, minutes_ago=1)
    with pytest.raises(services.OrderStateError, match="refund again"):
        services.order_refund(order=order, staff_user=charlie, reason="stuck?")
    assert fake_stripe.refunds == []
    RechargeOrder.objects.filter(pk=order.pk).update(  # time passes
        refund_requested_at=timezone.now() - timedelta(minutes=20)
    )
    services.order_refund(order=order, staff_user=charlie, reason="stuck")
    assert order.status == Status.REFUNDED
    assert len(fake_stripe.refunds) == 1
    assert (balance_of(alice), held_of(alice)) == (0, 0)
    assert ledger_sum(alice) == 0


def test_a_payment_callback_does_not_credit_an_order_being_refunded(alice, charlie):
    order = services.order_create(user=alice, amount=20_000_000, provider="sandbox")
    services.order_credit(order=order)
    leave_pending(order, charlie, minutes_ago=0)
    assert services.order_credit(order=order) is False
    assert balance_of(alice) == 20_000_000 == ledger_sum(alice)


def test_a_forced_refund_holds_and_takes_back_only_what_is_available(alice, charlie):
    order = services.order_create(user=alice, amount=20_000_000, provider="sandbox")
    services.order_credit(order=order)
    services.balance_charge(user=alice, amount=15_000_000, kind="usage")
    services.order_refund(order=order, staff_user=charlie, reason="chargeback", force=True)
    assert order.refunded_amount == 5_000_000
    assert (balance_of(alice), held_of(alice)) == (0, 0)
    assert Account.objects.get(user=alice).total_recharged == 0
