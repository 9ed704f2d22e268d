"""Settlement of a gateway's flush by billing: balances, holds, token quotas and the ledger."""

import re

import pytest
from django.db import connection, transaction
from django.db.models import F, Sum
from django.test.utils import CaptureQueriesContext

from billing.ledger import InsufficientBalance, UsagePosting, funds_lock_all, usage_post
from billing.models import Account, Hold, TokenQuota
from logs.writer import parts_of, write_each
from tests.billing.test_holds import Process, fund
from tests.conftest import balance_of, ledger_sum, make_user
from tokens.models import Token
from tokens.services import token_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def process():
    p = Process()
    yield p
    p.close()


def limited_token(user, line, limit=5_000_000):
    return token_create(
        user=user, name="limited", line=line, unlimited_quota=False, quota_limit=limit
    )[0]


def test_billing_reads_token_quotas_from_the_token_table():
    assert TokenQuota._meta.db_table == Token._meta.db_table
    columns = {f.column: type(f) for f in Token._meta.concrete_fields}
    for field in TokenQuota._meta.concrete_fields:
        assert columns[field.column] is type(field), field.name


def test_a_token_quota_is_never_saved_by_billing(alice, default_line):
    quota = TokenQuota.objects.get(pk=limited_token(alice, default_line).pk)
    with pytest.raises(TypeError, match="guarded updates"):
        quota.save()


def test_a_dead_processes_quota_hold_is_released_with_its_last_rows(alice, process, default_line):
    fund(alice, 10)
    token = limited_token(alice, default_line)
    process.spend(alice, token=token, limited=True, cost=600)
    assert Hold.objects.filter(token=token).get().amount > 600
    outcome = process.in_thread(
        write_each, parts_of(process.records).values(), owner="gateway-1", release_all=True
    )
    assert outcome.written == [alice.pk]
    token.refresh_from_db()
    assert (token.quota_used, token.quota_held) == (600, 0)
    assert not Hold.objects.exists()
    assert (balance_of(alice), Account.objects.get(user=alice).held) == (10_000_000 - 600, 0)
    assert ledger_sum(alice) == balance_of(alice)


MONEY_TABLES = re.compile(r'"?(billing_account|billing_hold|billing_ledgerentry|quota_)')


def flush_queries(process, requests, users, tokens, *, money_only=False):
    """The statements of one flush of `requests` per user, as the gateway's flush runs it;
    with `money_only`, those of its settlement: the ones on billing's rows."""
    for _ in range(requests):
        for user, token in zip(users, tokens, strict=True):
            process.spend(user, token=token, limited=not token.unlimited_quota, cost=300)
    parts = parts_of(process.records, process.book.take_settlement())
    process.records = []

    def flush():
        from logs.writer import write_flush

        with CaptureQueriesContext(connection) as queries:
            write_flush(list(parts.values()), owner=process.book.owner)
        if money_only:
            return len([q for q in queries if MONEY_TABLES.search(q["sql"])])
        return len(queries)

    return process.in_thread(flush)


def test_a_flush_costs_statements_per_account_not_per_request(alice, bob, process, default_line):
    fund(alice, 10)
    fund(bob, 10)
    users = [alice, bob]
    tokens = [
        limited_token(alice, default_line),
        token_create(user=bob, name="unlimited", line=default_line)[0],
    ]
    flush_queries(process, 1, users, tokens)  # the leases are taken
    assert flush_queries(process, 3, users, tokens) == flush_queries(process, 30, users, tokens)
    assert balance_of(alice) == 10_000_000 - 34 * 300 == ledger_sum(alice)
    assert balance_of(bob) == 10_000_000 - 34 * 300 == ledger_sum(bob)


def test_a_flush_of_many_accounts_costs_the_statements_of_two(alice, bob, process, default_line):
    """The flush's transaction locks the rows of every account it charges: its statements, and
    so the time other processes wait for those rows, must not grow with the accounts."""
    users = [alice, bob, *(make_user(f"user{n}@example.com") for n in range(10))]
    tokens = []
    for number, user in enumerate(users):
        fund(user, 10)
        limited = number % 2 == 0
        tokens.append(
            limited_token(user, default_line)
            if limited
            else token_create(user=user, name="unlimited", line=default_line)[0]
        )
    flush_queries(process, 1, users, tokens)  # the leases are taken
    assert flush_queries(process, 2, users[:2], tokens[:2], money_only=True) == flush_queries(
        process, 2, users, tokens, money_only=True
    )
    for user, token in zip(users, tokens, strict=True):
        spent = (3 if user in (alice, bob) else 1) * 300 + 2 * 300
        assert balance_of(user) == 10_000_000 - spent == ledger_sum(user), user.email
        token.refresh_from_db()
        assert token.quota_used == spent, user.email


def test_one_flush_charges_a_lost_hold_from_the_balance_and_the_others_from_theirs(
    alice, bob, charlie, process, default_line
):
    for user in (alice, bob, charlie):
        fund(user, 10)
        process.spend(user, cost=1_000)
    process.settle()
    for user in (alice, bob, charlie):
        process.spend(user, cost=2_000)
    # Bob's lease was reaped meanwhile (his process looked dead): his usage is charged from
    # his available balance; Alice's and Charlie's from their leases, in the same flush.
    lost = Hold.objects.get(user=bob, token=None)
    Account.objects.filter(user=bob).update(held=F("held") - lost.amount)
    lost.delete()
    outcome = process.settle()
    assert outcome.lost_users == [bob.pk]
    for user in (alice, bob, charlie):
        account = Account.objects.get(user=user)
        assert account.balance == 10_000_000 - 3_000 == ledger_sum(user), user.email
        held = Hold.objects.filter(user=user).aggregate(total=Sum("amount"))["total"] or 0
        assert account.held == held, user.email
    assert Account.objects.get(user=bob).held == 0
    assert Account.objects.get(user=alice).held > 0


def test_a_usage_posting_never_takes_more_than_is_available(alice, bob):
    """The flush's one guarded update refuses as ledger_post does: nothing of it is written."""
    fund(alice, 1)
    fund(bob, 1)
    with transaction.atomic():
        funds = funds_lock_all([alice.pk, bob.pk])
        Account.objects.filter(user=bob).update(held=900_000)  # bob's money is held meanwhile
        postings = [
            UsagePosting(funds[alice.pk], charged=500_000, from_held=0, release=0, requests=1),
            UsagePosting(funds[bob.pk], charged=500_000, from_held=0, release=0, requests=1),
        ]
        with pytest.raises(InsufficientBalance), transaction.atomic():
            usage_post(postings)
    assert (balance_of(alice), balance_of(bob)) == (1_000_000, 1_000_000)
    assert (ledger_sum(alice), ledger_sum(bob)) == (1_000_000, 1_000_000)
