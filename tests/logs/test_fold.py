"""The pending usage: flushes append their totals, and a fold adds them up into the rollups,
each pending row exactly once, however the folds and flushes of several processes overlap."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import DataError, close_old_connections, connection, transaction

from logs.models import UsageDay, UsageHour, UsageMinute, UsagePending
from logs.tasks import fold_usage
from logs.writer import usage_fold, write_batch
from tests.logs.test_writer import expected, record, stored

EARLY = datetime(2026, 4, 1, 23, 58, tzinfo=UTC)


def batch(user, first, size=6):
    """Requests a few seconds apart from `first` on, across a minute, an hour and a day."""
    return [
        record(user, at=first + timedelta(seconds=29 * n), cost=n + 1, prompt=n, completion=2)
        for n in range(size)
    ]


def test_usage_waits_in_pending_until_folded(alice):
    records = batch(alice, EARLY)
    write_batch(records, fold=False)
    assert UsageMinute.objects.count() == UsageHour.objects.count() == UsageDay.objects.count() == 0
    assert sum(UsagePending.objects.values_list("requests", flat=True)) == len(records)
    pending = UsagePending.objects.count()

    assert usage_fold() == pending
    assert not UsagePending.objects.exists()
    assert stored() == expected(records)
    assert usage_fold() == 0  # nothing left to take


def test_a_keys_many_flushes_become_one_row_of_each_rollup(alice):
    flushes = [batch(alice, EARLY, size=1) for _ in range(4)]
    for records in flushes:
        write_batch(records, fold=False)
    assert UsagePending.objects.count() == 4
    assert usage_fold() == 4
    every = [r for records in flushes for r in records]
    assert stored() == expected(every)
    assert UsageMinute.objects.get().requests == 4


def test_a_fold_adds_to_what_the_rollups_hold(alice):
    first, second = batch(alice, EARLY), batch(alice, EARLY + timedelta(seconds=5))
    write_batch(first)
    write_batch(second, fold=False)
    fold_usage()  # the periodic job: what a stopped process left
    assert stored() == expected(first + second)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_fold_leaves_the_pending_usage_to_the_process_folding_it(alice):
    write_batch(batch(alice, EARLY), fold=False)
    holding, done = threading.Event(), threading.Event()

    def other_process():
        try:
            with transaction.atomic():
                usage_fold()  # holds the fold's lock to the end of this transaction
                holding.set()
                done.wait(10)
        finally:
            close_old_connections()

    thread = threading.Thread(target=other_process)
    thread.start()
    try:
        assert holding.wait(10)
        write_batch(batch(alice, EARLY), fold=False)
        assert usage_fold() is None  # it does not wait for the other
        assert UsagePending.objects.count() > 0
    finally:
        done.set()
        thread.join(10)
    assert usage_fold() > 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_overlapping_flushes_and_folds_count_every_request_once(alice, bob):
    """Two processes flush while two fold, over and over; a pending row a flush commits while
    a fold runs is left for the next. What the rollups hold at the end is the requests'."""
    flushes = [
        batch(user, EARLY + timedelta(milliseconds=n)) for n in range(30) for user in (alice, bob)
    ]
    errors, writing = [], threading.Event()

    def flush(share):
        try:
            for records in share:
                write_batch(records, fold=False)
        except Exception as error:
            errors.append(error)
        finally:
            close_old_connections()

    def fold():
        try:
            while writing.is_set():
                usage_fold()
        except Exception as error:
            errors.append(error)
        finally:
            close_old_connections()

    writing.set()
    folders = [threading.Thread(target=fold) for _ in range(2)]
    flushers = [threading.Thread(target=flush, args=(flushes[n::2],)) for n in range(2)]
    for thread in folders + flushers:
        thread.start()
    for thread in flushers:
        thread.join(60)
    writing.clear()
    for thread in folders:
        thread.join(60)
    usage_fold()
    assert errors == []
    assert not UsagePending.objects.exists()
    assert stored() == expected([r for records in flushes for r in records])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_pending_row_committed_during_a_fold_is_not_lost(alice):
    """A flush whose ids come before the fold's view but which commits after it: the fold must
    take only what it added up."""
    first = batch(alice, EARLY)
    late = batch(alice, EARLY + timedelta(seconds=1))
    write_batch(first, fold=False)
    inside, go_on = threading.Event(), threading.Event()

    def slow_flush():
        try:
            with transaction.atomic():
                write_batch(late, fold=False)
                inside.set()
                go_on.wait(10)
        finally:
            close_old_connections()

    thread = threading.Thread(target=slow_flush)
    thread.start()
    assert inside.wait(10)
    usage_fold()  # sees `first` only: `late` is not committed
    go_on.set()
    thread.join(10)
    assert UsagePending.objects.count() > 0
    usage_fold()
    assert stored() == expected(first + late)


@pytest.mark.postgres
def test_a_fold_that_fails_keeps_the_pending_usage(alice):
    records = batch(alice, EARLY)
    write_batch(records, fold=False)
    pending = UsagePending.objects.count()
    with connection.cursor() as cursor:
        # A rollup row the fold cannot add to: its requests already at the column's limit.
        cursor.execute(
            "INSERT INTO logs_usageday (bucket, user_id, token_id, line_id, model, ok, requests, "
            "prompt_tokens, completion_tokens, cost, latency_ms, cache_read_tokens, "
            "cache_write_tokens) VALUES (%s, %s, 0, 0, 'gpt-4o-mini', true, 2147483647, "
            "0, 0, 0, 0, 0, 0)",
            [records[0].created_at.date(), alice.pk],
        )
    with pytest.raises(DataError), transaction.atomic():
        usage_fold()
    assert UsagePending.objects.count() == pending
    assert UsageMinute.objects.count() == 0
