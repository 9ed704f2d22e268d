"""Leases: money held in the database, spent in memory, settled with the log rows it paid for."""

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone

from billing import services
from billing.holds import HoldBook, Refused, holds_reap
from billing.models import Account, Hold, LedgerEntry
from logs.models import RequestLog
from logs.writer import parts_of, write_each, write_flush
from tests.conftest import balance_of, ledger_sum
from tests.logs.test_pages import make_record
from tokens.models import Token
from tokens.services import token_create

pytestmark = pytest.mark.django_db(transaction=True)


class Process:
    """A gateway process's lease book and its records, with a database thread, driven from a
    test: requests are reserved, finished and recorded as the gateway does."""

    def __init__(self, name="gateway-1"):
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.loop = asyncio.new_event_loop()
        self.book = HoldBook(name, self.run_db)
        self.records = []

    async def run_db(self, function, **kwargs):
        def work():
            close_old_connections()
            return function(**kwargs)

        return await asyncio.get_running_loop().run_in_executor(self.executor, work)

    def reserve(self, **kwargs):
        return self.loop.run_until_complete(self.book.reserve(**kwargs))

    def spend(self, user, *, cost, token=None, limited=False, reserved=1_000, **record):
        """One request: reserved, answered at `cost`, recorded. Returns what was charged."""
        token_id = token.pk if token else None
        self.reserve(user_id=user.pk, token_id=token_id, limited=limited, amount=reserved)
        charged = self.book.finish(
            user_id=user.pk, token_id=token_id, limited=limited, reserved=reserved, cost=cost
        )
        entry = make_record(user, token, cost=charged, **record)
        entry.quota_hold = limited and charged > 0
        self.records.append(entry)
        return charged

    def settle(self):
        """One flush: the records and the lease money given back, written as the gateway does."""
        parts = parts_of(self.records, self.book.take_settlement())
        self.records = []
        outcome = self.in_thread(write_flush, list(parts.values()), owner=self.book.owner)
        self.book.forget(users=outcome.lost_users, tokens=outcome.lost_tokens)
        return outcome

    def in_thread(self, function, *args, **kwargs):
        return self.executor.submit(functools.partial(function, *args, **kwargs)).result()

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


def fund_exactly(user, micros):
    Account.objects.filter(user=user).update(balance=micros)
    LedgerEntry.objects.create(
        account_id=user.pk, kind="adjustment", amount=micros, balance_after=micros
    )


def test_a_rich_account_holds_a_quarter_of_its_funds_up_to_the_cap(alice, process, settings):
    settings.LEASE_MAX = 5_000_000
    fund(alice, 100)
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    assert Account.objects.get(user=alice).held == 5_000_000
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


def test_a_flush_charges_what_its_log_rows_cost_with_one_ledger_row(alice, process):
    fund(alice, 10)
    for _ in range(3):
        process.spend(alice, cost=400)
    process.settle()
    account = Account.objects.get(user=alice)
    assert account.balance == 10_000_000 - 1_200
    assert account.held == Hold.objects.get(user=alice).amount
    entry = LedgerEntry.objects.filter(kind="usage").get()
    assert (entry.amount, entry.request_count, entry.balance_after) == (-1_200, 3, account.balance)
    assert ledger_sum(alice) == account.balance
    assert RequestLog.objects.count() == 3


def test_when_funds_are_short_the_lease_is_just_the_request(alice, process):
    fund_exactly(alice, 2_500)
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    assert Account.objects.get(user=alice).held == 1_000
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    with pytest.raises(Refused) as refused:
        process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    assert refused.value.code == "insufficient_quota"


def test_a_real_cost_above_the_estimate_is_charged_from_the_lease(alice, process):
    fund(alice, 10)
    assert process.spend(alice, cost=5_000) == 5_000


def test_a_cost_beyond_all_held_money_is_capped_not_overdrawn(alice, process):
    fund_exactly(alice, 1_000)
    assert process.spend(alice, cost=5_000) == 1_000
    process.settle()
    assert balance_of(alice) == 0 == ledger_sum(alice)


def test_a_limited_token_holds_its_quota_too(alice, process, default_line):
    fund(alice, 10)
    token, _key = token_create(
        user=alice,
        name="t",
        line=default_line,
        unlimited_quota=False,
        quota_limit=2_000,
        notify=False,
    )
    process.spend(alice, token=token, limited=True, cost=1_000)
    process.spend(alice, token=token, limited=True, cost=1_000)
    with pytest.raises(Refused) as refused:
        process.reserve(user_id=alice.pk, token_id=token.pk, limited=True, amount=1_000)
    assert refused.value.code == "token_quota_exceeded"
    process.settle()
    token.refresh_from_db()
    assert (token.quota_used, token.quota_held) == (2_000, 0)
    assert balance_of(alice) == 10_000_000 - 2_000


def test_idle_leases_are_given_back(alice, process):
    fund(alice, 10)
    process.spend(alice, cost=300)
    process.book.accounts[alice.pk].last_active -= 60
    process.settle()
    assert Account.objects.get(user=alice).held == 0
    assert not Hold.objects.exists()
    assert alice.pk not in process.book.accounts
    assert balance_of(alice) == 10_000_000 - 300 == ledger_sum(alice)


def test_the_holds_of_a_dead_process_are_released_by_the_reaper(alice, process):
    fund(alice, 10)
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    assert Account.objects.get(user=alice).held > 0
    assert holds_reap() == 0  # still fresh
    assert holds_reap(now=timezone.now() + timedelta(minutes=10)) == 1
    assert Account.objects.get(user=alice).held == 0
    assert not Hold.objects.exists()
    assert holds_reap(now=timezone.now() + timedelta(minutes=10)) == 0


def test_the_reaper_goes_on_past_a_hold_it_cannot_release(alice, bob, process, caplog):
    fund(alice, 10)
    fund(bob, 10)
    process.reserve(user_id=bob.pk, token_id=None, limited=False, amount=1_000)
    # A hold row larger than what the account holds: releasing it would break the CHECK.
    Hold.objects.create(owner="broken", user=alice, amount=7, expires_at=timezone.now())
    later = timezone.now() + timedelta(minutes=10)
    assert holds_reap(now=later) == 1
    assert Account.objects.get(user=bob).held == 0
    assert Hold.objects.filter(owner="broken").exists()
    assert "Could not release expired hold" in caplog.text


def test_a_process_that_lost_its_hold_still_settles_without_overdrawing(alice, process):
    fund(alice, 10)
    process.spend(alice, cost=700)
    holds_reap(now=timezone.now() + timedelta(minutes=10))  # it stalled past its expiry
    process.settle()
    account = Account.objects.get(user=alice)
    assert (account.balance, account.held) == (10_000_000 - 700, 0)
    assert ledger_sum(alice) == account.balance
    assert process.book.accounts[alice.pk].free == 0  # what it held is gone: asked afresh


def test_tokens_spend_is_counted_even_when_unlimited(alice, process, default_line):
    fund(alice, 10)
    token, _key = token_create(user=alice, name="t", line=default_line, notify=False)
    process.spend(alice, token=token, cost=250)
    process.settle()
    assert Token.objects.get(pk=token.pk).quota_used == 250


def test_a_row_the_database_refuses_holds_back_only_itself(alice, bob, process, caplog):
    fund(alice, 10)
    fund(bob, 10)
    process.spend(alice, cost=100)
    process.spend(alice, cost=200, model="gpt-4o-mini\ud800")  # no database can store this
    process.spend(alice, cost=300)
    process.spend(bob, cost=400)
    outcome = process.settle()
    assert sorted(outcome.written) == [bob.pk]
    pieces, error = outcome.refused[alice.pk]
    assert [r.cost for piece in pieces for r in piece.records] == [200]
    assert "surrogate" in error
    assert balance_of(bob) == 10_000_000 - 400 == ledger_sum(bob)
    assert balance_of(alice) == 10_000_000 - 400 == ledger_sum(alice)
    assert RequestLog.objects.count() == 3
    # Its money stays held until it settles.
    assert Account.objects.get(user=alice).held == Hold.objects.get(user=alice).amount >= 200
    assert "Set aside 1 log rows (200 micro-dollars)" in caplog.text


def test_rows_written_before_are_neither_written_nor_charged_again(alice, process):
    fund(alice, 10)
    process.spend(alice, cost=100)
    process.spend(alice, cost=200)
    records = list(process.records)
    process.settle()
    # The same rows again, as after a flush whose commit the process did not hear of.
    outcome = process.in_thread(write_each, parts_of(records).values(), owner=process.book.owner)
    assert outcome.written == [alice.pk]
    assert RequestLog.objects.count() == 2
    assert balance_of(alice) == 10_000_000 - 300 == ledger_sum(alice)


def test_a_dead_processes_rows_are_charged_from_its_hold_and_the_rest_released(alice, process):
    fund(alice, 10)
    process.spend(alice, cost=100)
    process.spend(alice, cost=200)
    assert Account.objects.get(user=alice).held > 0
    # The process dies; its journal is replayed by another, which releases what is left.
    outcome = process.in_thread(
        write_each, parts_of(process.records).values(), owner="gateway-1", release_all=True
    )
    assert outcome.written == [alice.pk]
    account = Account.objects.get(user=alice)
    assert (account.balance, account.held) == (10_000_000 - 300, 0)
    assert not Hold.objects.exists()
    assert ledger_sum(alice) == account.balance


def test_a_lease_whose_hold_was_lost_keeps_what_requests_in_flight_reserved(alice, process):
    fund(alice, 10)
    process.reserve(user_id=alice.pk, token_id=None, limited=False, amount=1_000)
    process.book.forget(users=[alice.pk])  # a flush found its hold reaped meanwhile
    lease = process.book.accounts[alice.pk]
    assert (lease.held, lease.reserved, lease.free) == (1_000, 1_000, 0)
    assert (
        process.book.finish(
            user_id=alice.pk, token_id=None, limited=False, reserved=1_000, cost=700
        )
        == 700
    )


def test_a_request_cancelled_while_its_quota_is_topped_up_leaves_nothing_reserved(
    alice, process, default_line
):
    fund(alice, 10)
    token = token_create(
        user=alice,
        name="t",
        line=default_line,
        unlimited_quota=False,
        quota_limit=5_000,
        notify=False,
    )[0]

    async def cancelled_in_the_middle():
        request = asyncio.ensure_future(
            process.book.reserve(user_id=alice.pk, token_id=token.pk, limited=True, amount=1_000)
        )
        while alice.pk not in process.book.accounts or token.pk not in process.book.quotas:
            await asyncio.sleep(0)  # the account is held; the quota's top-up is under way
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request

    process.loop.run_until_complete(cancelled_in_the_middle())
    assert process.book.accounts[alice.pk].reserved == 0
    assert process.book.quotas[token.pk].reserved == 0


def test_refused_rows_are_found_over_retries_and_the_rest_written(alice, process):
    fund(alice, 10)
    bad = "gpt-4o-mini\ud800"  # no database can store it
    for n in range(400):
        process.spend(alice, cost=10, model=bad if n in (3, 120, 250, 390) else "gpt-4o-mini")
    parts = list(parts_of(process.records, process.book.take_settlement()).values())
    outcome = process.in_thread(write_each, parts, owner=process.book.owner)
    first = outcome.refused[alice.pk][0]
    assert sum(len(piece.records) for piece in first) > 4  # the search is bounded per flush
    for _retry in range(5):
        pieces, error = outcome.refused[alice.pk]
        outcome = process.in_thread(
            write_each, pieces, owner=process.book.owner, errors={alice.pk: error}
        )
    pieces, _error = outcome.refused[alice.pk]
    assert [r.model for piece in pieces for r in piece.records] == [bad] * 4
    assert RequestLog.objects.count() == 396
    assert balance_of(alice) == 10_000_000 - 3_960 == ledger_sum(alice)
