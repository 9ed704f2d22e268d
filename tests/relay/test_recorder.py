"""A gateway process's records on their way to the database: what fails after a commit is not
written again, holds stay alive while an account is set aside, and a damaged journal line
costs only itself."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from billing import services
from billing.holds import HoldBook
from billing.models import Account, Hold, LedgerEntry
from logs.models import RequestLog, UsageMinute, UsagePending
from relay import recorder
from relay.journal import Journal, replay_orphans
from relay.recorder import Recorder
from tests.conftest import balance_of, ledger_sum
from tests.logs.test_pages import make_record

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class Process:
    """A gateway process's hold book and recorder, driven from the test."""

    def __init__(self, owner="gateway-1"):
        self.loop = asyncio.new_event_loop()
        self.database = ThreadPoolExecutor(max_workers=1)
        self.book = HoldBook(owner, self.run_db)
        self.recorder = Recorder(owner)
        self.run(self._start())

    async def _start(self):
        self.recorder.start()

    async def run_db(self, function, **kwargs):
        def work():
            close_old_connections()
            return function(**kwargs)

        return await asyncio.get_running_loop().run_in_executor(self.database, work)

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def answer(self, user, cost):
        self.run(self.book.reserve(user_id=user.pk, token_id=None, limited=False, amount=1_000))
        charged = self.book.finish(
            user_id=user.pk, token_id=None, limited=False, reserved=1_000, cost=cost
        )
        self.recorder.add(make_record(user, cost=charged))

    def flush(self):
        return self.run(self.recorder.flush(self.book.take_settlement()))

    def close(self):
        self.run(self.recorder.stop())
        self.database.submit(close_old_connections).result()
        self.database.shutdown()
        self.loop.close()


@pytest.fixture
def process(alice):
    services.balance_credit(user=alice, amount=10_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    p = Process()
    yield p
    p.close()


def held_by(owner, user):
    return sum(Hold.objects.filter(owner=owner, user=user).values_list("amount", flat=True))


def test_a_failure_after_the_commit_does_not_write_the_flush_again(alice, process, refusals):
    process.answer(alice, cost=100)
    refusals.hold_refresh()  # the flush commits; keeping its holds alive then fails
    outcome = process.flush()
    refusals.none()
    assert outcome.written == [alice.pk]
    assert process.recorder.unsent == {}
    process.answer(alice, cost=100)
    process.flush()
    lease = process.book.accounts[alice.pk]
    assert held_by("gateway-1", alice) == lease.held == Account.objects.get(user=alice).held
    assert balance_of(alice) == ledger_sum(alice) == 10_000_000 - 200
    assert RequestLog.objects.count() == 2


def test_holds_stay_alive_while_an_account_is_set_aside(alice, process, refusals):
    refusals.rows_of(alice)
    process.answer(alice, cost=100)
    process.flush()
    assert alice.pk in process.recorder.set_aside
    Hold.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    process.flush()  # nothing fresh, nothing due
    assert Hold.objects.get().expires_at > timezone.now() + timedelta(seconds=60)
    assert alice.pk in process.recorder.set_aside


def test_a_busy_process_folds_every_few_seconds_and_at_the_end(alice, settings, monkeypatch):
    settings.USAGE_FOLD_SECONDS = 3600
    monkeypatch.setattr(recorder, "FOLD_EACH_FLUSH_BELOW", 2)  # 2 requests a flush: busy
    process = Process()
    services.balance_credit(user=alice, amount=10_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    try:
        process.answer(alice, cost=100)
        process.answer(alice, cost=100)
        process.flush()  # a process's first flush folds
        process.answer(alice, cost=100)
        process.answer(alice, cost=100)
        process.flush()
        assert UsagePending.objects.count() == 1
        assert sum(UsageMinute.objects.values_list("requests", flat=True)) == 2
        process.answer(alice, cost=100)  # a quiet flush folds at once
        process.flush()
        assert sum(UsageMinute.objects.values_list("requests", flat=True)) == 5
        process.answer(alice, cost=100)
        process.answer(alice, cost=100)
    finally:
        process.run(process.recorder.flush(process.book.release_everything(), final=True))
        process.close()
    assert not UsagePending.objects.exists()
    assert sum(UsageMinute.objects.values_list("cost", flat=True)) == 700


def test_an_unreadable_journal_line_costs_only_itself(alice):
    services.balance_credit(user=alice, amount=10_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    directory = settings.GATEWAY_JOURNAL_DIR
    written = []
    for owner in ("gateway-a", "gateway-b"):
        journal = Journal(directory, owner).open()
        records = [make_record(alice, cost=0) for _ in range(3)]
        journal.write(records[0])
        journal.write_many(records[1:2])
        with journal.path.open("ab") as segment:
            segment.write(b"['garbled', \n")  # as after a short write on a full disk
        journal.write(records[2])
        journal.close(settled=False)  # as if killed: the journal stays for a replay
        written += [r.id for r in records]
    assert replay_orphans(directory) == 6
    assert set(RequestLog.objects.values_list("id", flat=True)) == set(written)
    assert not list(directory.iterdir())
