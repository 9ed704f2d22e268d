"""Money under concurrency, on PostgreSQL's row locking: many threads, one balance."""

import threading

import pytest
from django.db import connection

from billing import services
from billing.models import LedgerEntry, PaymentEvent, RechargeOrder
from billing.providers import PaymentUpdate
from tests.conftest import balance_of, ledger_sum

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_together(count, work):
    """Runs work(i) in `count` threads released at the same moment; returns results in order."""
    barrier = threading.Barrier(count)
    results = [None] * count

    def worker(i):
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as error:  # collected for the assertions
            results[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_fifty_concurrent_charges_against_a_balance_for_ten_take_exactly_ten(alice):
    services.balance_credit(user=alice, amount=10_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    results = run_together(
        50, lambda i: services.balance_charge(user=alice, amount=1_000_000, kind="usage")
    )
    succeeded = [r for r in results if isinstance(r, LedgerEntry)]
    refused = [r for r in results if isinstance(r, services.InsufficientBalance)]
    assert len(succeeded) == 10
    assert len(refused) == 40
    assert balance_of(alice) == 0 == ledger_sum(alice)
    # Each ledger row's balance_after is a distinct step down: no two charges saw the same balance.
    afters = sorted(e.balance_after for e in succeeded)
    assert afters == [i * 1_000_000 for i in range(10)]


def test_twenty_concurrent_deliveries_of_one_webhook_event_credit_once(alice):
    order = services.order_create(user=alice, amount=20_000_000, provider="sandbox")
    update = PaymentUpdate("evt_same", "payment.succeeded", order.number, "paid", order.amount)
    results = run_together(
        20, lambda i: services.payment_event_handle(provider="sandbox", update=update).outcome
    )
    assert sorted(results) == ["credited"] + ["replay"] * 19
    assert balance_of(alice) == 20_000_000 == ledger_sum(alice)
    assert RechargeOrder.objects.get().status == "credited"
    assert PaymentEvent.objects.filter(outcome="credited").count() == 1


def test_different_events_for_one_order_racing_still_credit_once(alice):
    order = services.order_create(user=alice, amount=20_000_000, provider="sandbox")
    results = run_together(
        10,
        lambda i: (
            services.payment_event_handle(
                provider="sandbox",
                update=PaymentUpdate(
                    f"evt_{i}", "payment.succeeded", order.number, "paid", order.amount
                ),
            ).outcome
        ),
    )
    assert sorted(results) == ["already_done"] * 9 + ["credited"]
    assert balance_of(alice) == 20_000_000 == ledger_sum(alice)


def test_two_people_redeeming_one_code_at_once_credit_it_once(alice, bob, charlie):
    _batch, text = services.redemption_batch_create(
        name="race", amount=7_000_000, count=1, expires_at=None, staff_user=charlie
    )
    code = text.splitlines()[1].split(",")[0]
    users = [alice, bob] * 5
    results = run_together(10, lambda i: services.code_redeem(user=users[i], code=code))
    assert sum(isinstance(r, LedgerEntry) for r in results) == 1
    assert all(isinstance(r, LedgerEntry | services.RedemptionRefused) for r in results), results
    assert balance_of(alice) + balance_of(bob) == 7_000_000
