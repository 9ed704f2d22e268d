"""Leases: money held in the database, spent in memory, settled in batches."""

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone

from billing import services
from billing.holds import HoldBook, Refused, holds_reap, holds_settle
from billing.models import Account, Hold, LedgerEntry
from tests.conftest import balance_of, ledger_sum
from tokens.models import Token
from tokens.services import token_create

pytestmark = pytest.mark.django_db(transaction=True)


class Process:
    """A gateway process's lease book, with its database thread, driven from a test."""

    def __init__(self, name="gateway-1"):
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.loop = asyncio.new_event_loop()
        self.book = HoldBook(name, self.run_db)

    async def run_db(self, function, **kwargs):
        def work():
            close_old_connections()
            return function(**kwargs)

        return await asyncio.get_running_loop().run_in_executor(self.executor, work)

    def reserve(self, **kwargs):
        return self.loop.run_until_complete(self.book.reserve(**kwargs))

    def settle(self, settlement=None):
        settlement = settlement if settlement is not None else self.book.take_settlement()
        result = self.executor.submit(
            functools.partial(holds_settle, owner=self.book.owner, settlement=settlement)
        ).result()
        self.book.forget(users=result[0], tokens=result[1])
        return settlement

    def close(self):
        self.executor.submit(close_old_connections).result()
        self.executor.shutdown()
        self.loop.close()


@pytest.fixture
def process():
    p = Process()
    yield p
    p.close()


def fund(user, dollars):
    services.balance_credit(user=user, amount=dollars * 1_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)


def test_a_rich_account_holds_a_quarter_of_its_funds_up_to_the_cap(alice, process, settings):
    settings.LEASE_MAX = 5_000_000
    fund(alice, 100)
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    assert Account.objects.get(user=alice).held == 5_000_000
    fund(alice, 0 + 1)  # unrelated credit; nothing else held
    process2 = Process("gateway-2")
    try:
        Account.objects.filter(user=alice).update(balance=8_000_000 + 5_000_000)
        process2.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
        assert Account.objects.get(user=alice).held == 5_000_000 + 2_000_000
    finally:
        process2.close()


def test_spending_needs_no_database_until_the_lease_runs_out(
    alice, process, django_assert_num_queries
):
    fund(alice, 10)
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    with django_assert_num_queries(0):
        for _ in range(100):
            process.loop.run_until_complete(
                process.book.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
            )
            process.book.finish(
                user_id=alice.pk, token_id=None, limited=False, reserved=1_000, cost=700
            )


def test_a_settlement_charges_the_balance_and_writes_one_ledger_row(alice, process):
    fund(alice, 10)
    for _ in range(3):
        process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
        process.book.finish(
            user_id=alice.pk, token_id=None, limited=False, reserved=1_000, cost=400
        )
    process.settle()
    account = Account.objects.get(user=alice)
    assert account.balance == 10_000_000 - 1_200
    assert account.held == Hold.objects.get(user=alice).amount
    entry = LedgerEntry.objects.filter(kind="usage").get()
    assert (entry.amount, entry.request_count, entry.balance_after) == (-1_200, 3, account.balance)
    assert ledger_sum(alice) == account.balance


def test_when_funds_are_short_the_lease_is_just_the_request(alice, process):
    Account.objects.filter(user=alice).update(balance=2_500)
    LedgerEntry.objects.create(
        account_id=alice.pk, kind="adjustment", amount=2_500, balance_after=2_500
    )
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    assert Account.objects.get(user=alice).held == 1_000
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    with pytest.raises(Refused) as refused:
        process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    assert refused.value.code == "insufficient_quota"


def test_a_real_cost_above_the_estimate_is_charged_from_the_lease(alice, process):
    fund(alice, 10)
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    charged = process.book.finish(
        user_id=alice.pk, token_id=None, limited=False, reserved=1_000, cost=5_000
    )
    assert charged == 5_000


def test_a_cost_beyond_all_held_money_is_capped_not_overdrawn(alice, process):
    Account.objects.filter(user=alice).update(balance=1_000)
    LedgerEntry.objects.create(
        account_id=alice.pk, kind="adjustment", amount=1_000, balance_after=1_000
    )
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    charged = process.book.finish(
        user_id=alice.pk, token_id=None, limited=False, reserved=1_000, cost=5_000
    )
    assert charged == 1_000
    process.settle()
    assert balance_of(alice) == 0 == ledger_sum(alice)


def test_a_limited_token_holds_its_quota_too(alice, process, default_group):
    fund(alice, 10)
    token, _key = token_create(
        user=alice,
        name="t",
        group=default_group,
        unlimited_quota=False,
        quota_limit=2_000,
        notify=False,
    )
    process.reserve(user_id=alice.pk, token_id=token.pk, limited=True, amount=1_000)
    process.book.finish(
        user_id=alice.pk, token_id=token.pk, limited=True, reserved=1_000, cost=1_000
    )
    process.reserve(user_id=alice.pk, token_id=token.pk, limited=True, amount=1_000)
    process.book.finish(
        user_id=alice.pk, token_id=token.pk, limited=True, reserved=1_000, cost=1_000
    )
    with pytest.raises(Refused) as refused:
        process.reserve(user_id=alice.pk, token_id=token.pk, limited=True, amount=1_000)
    assert refused.value.code == "token_quota_exceeded"
    process.settle()
    token.refresh_from_db()
    assert (token.quota_used, token.quota_held) == (2_000, 0)
    assert balance_of(alice) == 10_000_000 - 2_000


def test_a_failed_flush_is_put_back_and_settled_next_time(alice, process):
    fund(alice, 10)
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    process.book.finish(user_id=alice.pk, token_id=None, limited=False, reserved=1_000, cost=300)
    settlement = process.book.take_settlement()
    process.book.restore(settlement)  # the database was away
    process.settle()
    assert balance_of(alice) == 10_000_000 - 300 == ledger_sum(alice)


def test_idle_leases_are_given_back(alice, process):
    fund(alice, 10)
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    process.book.finish(user_id=alice.pk, token_id=None, limited=False, reserved=1_000, cost=300)
    process.book.accounts[alice.pk].last_active -= 60
    process.settle()
    assert Account.objects.get(user=alice).held == 0
    assert not Hold.objects.exists()
    assert alice.pk not in process.book.accounts


def test_the_holds_of_a_dead_process_are_released_by_the_reaper(alice, process):
    fund(alice, 10)
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    held = Account.objects.get(user=alice).held
    assert held > 0
    assert holds_reap() == 0  # still fresh
    assert holds_reap(now=timezone.now() + timedelta(minutes=10)) == 1
    assert Account.objects.get(user=alice).held == 0
    assert not Hold.objects.exists()
    assert holds_reap(now=timezone.now() + timedelta(minutes=10)) == 0


def test_a_process_that_lost_its_hold_still_settles_without_overdrawing(alice, process):
    fund(alice, 10)
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    process.book.finish(user_id=alice.pk, token_id=None, limited=False, reserved=1_000, cost=700)
    holds_reap(now=timezone.now() + timedelta(minutes=10))  # it stalled past its expiry
    process.settle()
    account = Account.objects.get(user=alice)
    assert (account.balance, account.held) == (10_000_000 - 700, 0)
    assert ledger_sum(alice) == account.balance
    assert alice.pk not in process.book.accounts


def test_tokens_spend_is_counted_even_when_unlimited(alice, process, default_group):
    fund(alice, 10)
    token, _key = token_create(user=alice, name="t", group=default_group, notify=False)
    process.reserve(user_id=alice.pk, token_id=token.pk, limited=False, amount=1_000)
    process.book.finish(
        user_id=alice.pk, token_id=token.pk, limited=False, reserved=1_000, cost=250
    )
    process.settle()
    assert Token.objects.get(pk=token.pk).quota_used == 250
