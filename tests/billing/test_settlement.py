"""Settlement of a gateway's flush by billing: balances, holds, token quotas and the ledger."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import Account, Hold, TokenQuota
from logs.writer import parts_of, write_each
from tests.billing.test_holds import Process, fund
from tests.conftest import balance_of, ledger_sum
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


def flush_queries(process, requests, users, tokens):
    """The statements of one flush of `requests` per user, as the gateway's flush runs it."""
    for _ in range(requests):
        for user, token in zip(users, tokens, strict=True):
            process.spend(user, token=token, limited=not token.unlimited_quota, cost=300)
    parts = parts_of(process.records, process.book.take_settlement())
    process.records = []

    def flush():
        from logs.writer import write_flush

        with CaptureQueriesContext(connection) as queries:
            write_flush(list(parts.values()), owner=process.book.owner)
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
