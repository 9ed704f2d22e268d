"""The guard that keeps a balance whole across processes: two gateway processes' hold books
take money from one account at the same moments, and never more than it has."""

import os
import subprocess
import sys
import time

import pytest
from django.conf import settings

from billing import services
from billing.models import Account, Hold, LedgerEntry
from logs.models import RequestLog
from tests.billing.lease_process import COST
from tests.conftest import balance_of, ledger_sum
from tests.relay.processes import database_url

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
CREDITS = 300


def spender(owner, user, start_at, stop_at):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.billing.lease_process",
            owner,
            str(user.pk),
            str(start_at),
            str(stop_at),
        ],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DATABASE_URL": database_url(), "SECRET_KEY": settings.SECRET_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_never_hold_more_than_the_balance(alice):
    # Both processes ask the database for every request's money (leases of one request), and
    # the balance is credited one request at a time while they do: each credit is taken by
    # one of them, never both.
    start_at = time.time() + 3
    stop_at = start_at + 20  # the credits take 2–12 s, by how loaded the machine is
    processes = [spender(owner, alice, start_at, stop_at) for owner in ("gateway-a", "gateway-b")]
    time.sleep(max(start_at - time.time(), 0))
    for _ in range(CREDITS):
        services.balance_credit(user=alice, amount=COST, kind=LedgerEntry.Kind.ADJUSTMENT)
        time.sleep(0.002)
    assert time.time() < stop_at - 1, "the credits took too long to leave time to spend them"
    results = [process.communicate(timeout=60) for process in processes]
    for process, (_out, errors) in zip(processes, results, strict=True):
        assert process.returncode == 0, errors
    served = [int(out) for out, _errors in results]
    assert all(served), f"both processes must have spent: {served}"
    assert sum(served) == CREDITS
    assert RequestLog.objects.count() == CREDITS
    account = Account.objects.get(user=alice)
    assert (account.balance, account.held) == (0, 0)
    assert ledger_sum(alice) == balance_of(alice) == 0
    assert not Hold.objects.exists()
