import pytest
from django.db import transaction

from billing import services
from billing.ledger import Funds, InsufficientBalance, debit_amount, funds_lock, ledger_post
from billing.models import Account, BonusTier, LedgerEntry
from tests.conftest import balance_of, ledger_sum

Kind = LedgerEntry.Kind


def test_every_user_has_an_account_from_the_start(alice):
    assert Account.objects.get(user=alice).balance == 0


def test_a_credit_and_a_charge_write_ledger_rows_with_the_balance_after(alice):
    services.balance_credit(user=alice, amount=5_000_000, kind=Kind.ADJUSTMENT, reason="test")
    entry = services.balance_charge(user=alice, amount=1_250_000, kind=Kind.USAGE)
    assert entry.amount == -1_250_000
    assert entry.balance_after == 3_750_000
    assert balance_of(alice) == 3_750_000 == ledger_sum(alice)


def test_a_charge_beyond_the_balance_is_refused_and_changes_nothing(alice):
    services.balance_credit(user=alice, amount=1_000_000, kind=Kind.ADJUSTMENT)
    with pytest.raises(services.InsufficientBalance, match=r"\$1.00\) does not cover \$1.50"):
        services.balance_charge(user=alice, amount=1_500_000, kind=Kind.USAGE)
    assert balance_of(alice) == 1_000_000 == ledger_sum(alice)
    assert LedgerEntry.objects.filter(account__user=alice).count() == 1


def test_money_held_for_requests_cannot_be_charged_twice(alice):
    services.balance_credit(user=alice, amount=1_000_000, kind=Kind.ADJUSTMENT)
    Account.objects.filter(user=alice).update(held=800_000)
    with pytest.raises(services.InsufficientBalance):
        services.balance_charge(user=alice, amount=300_000, kind=Kind.ADJUSTMENT)
    services.balance_charge(user=alice, amount=200_000, kind=Kind.ADJUSTMENT)
    assert balance_of(alice) == 800_000


def test_staff_adjustments_need_a_reason_and_go_both_ways(alice, charlie):
    with pytest.raises(services.BillingError, match="reason"):
        services.balance_adjust(user=alice, amount=1, staff_user=charlie, reason=" ")
    services.balance_adjust(user=alice, amount=2_000_000, staff_user=charlie, reason="goodwill")
    entry = services.balance_adjust(user=alice, amount=-500_000, staff_user=charlie, reason="fix")
    assert entry.staff_user == charlie
    assert entry.reason == "fix"
    assert balance_of(alice) == 1_500_000 == ledger_sum(alice)


def test_the_bonus_tier_counts_the_recharge_that_reaches_it(alice):
    BonusTier.objects.create(threshold=500_000_000, percent=5)
    BonusTier.objects.create(threshold=2_000_000_000, percent=8)
    assert services.bonus_for(alice, 100_000_000) == (0, None)
    bonus, tier = services.bonus_for(alice, 500_000_000)
    assert bonus == 25_000_000
    assert tier.percent == 5
    Account.objects.filter(user=alice).update(total_recharged=1_900_000_000)
    assert services.bonus_for(alice, 100_000_000)[0] == 8_000_000
    status = services.tier_status(alice)
    assert status.current.percent == 5
    assert status.next.percent == 8
    assert status.to_next == 100_000_000


def test_the_debit_rule_takes_all_it_asks_or_with_partial_what_is_available():
    funds = Funds(account_id=1, balance=5_000, held=2_000)
    assert debit_amount(funds, 3_000) == 3_000
    with pytest.raises(InsufficientBalance, match=r"\(\$0.003\) does not cover"):
        debit_amount(funds, 3_001)
    assert debit_amount(funds, 3_001, partial=True) == 3_000
    assert debit_amount(Funds(account_id=1, balance=0, held=0), 10, partial=True) == 0


def test_the_ledger_writer_refuses_a_debit_the_balance_no_longer_covers(alice):
    services.balance_credit(user=alice, amount=1_000_000, kind=Kind.ADJUSTMENT)
    stale = Funds(account_id=alice.pk, balance=9_000_000, held=0)  # read without the lock
    with pytest.raises(InsufficientBalance), transaction.atomic():
        ledger_post(funds=stale, kind=Kind.USAGE, amount=-2_000_000)
    assert balance_of(alice) == 1_000_000 == ledger_sum(alice)


def test_spending_held_money_takes_it_out_of_the_hold_with_the_balance(alice):
    services.balance_credit(user=alice, amount=1_000_000, kind=Kind.ADJUSTMENT)
    Account.objects.filter(user=alice).update(held=600_000)
    with transaction.atomic():
        funds = funds_lock(alice.pk)
        entry = ledger_post(
            funds=funds, kind=Kind.USAGE, amount=-700_000, from_held=400_000, release=200_000
        )
    account = Account.objects.get(user=alice)
    assert (account.balance, account.held, entry.balance_after) == (300_000, 0, 300_000)
    assert ledger_sum(alice) == 300_000
