"""The request log partitioned by day on PostgreSQL: rows in their day's partition, partitions
made ahead by the periodic job (and at migrate time for the rows already there), rows of a day
without partition kept in DEFAULT and moved when it is made, whole days dropped by retention,
and the gateway's writer unchanged: each row written and charged once."""

import threading
import uuid
from datetime import UTC, timedelta

import pytest
from django.apps import apps
from django.db import IntegrityError, connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from logs import partitions
from logs.models import RequestLog
from logs.partitions import DAYS_AHEAD, DEFAULT, partition_days, partition_name, partitions_make
from logs.retention import prune
from logs.tasks import make_log_partitions
from logs.writer import RECORD_FIELDS, parts_of, write_batch, write_each
from tests.billing.test_holds import Process, fund
from tests.conftest import balance_of, ledger_sum
from tests.logs.test_pages import make_record

pytestmark = pytest.mark.postgres


def sql(statement, params=()):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def table_of(record_id):
    """The partition a log row is stored in."""
    return sql("SELECT tableoid::regclass::text FROM logs_requestlog WHERE id = %s", [record_id])[
        0
    ][0]


def exists(table):
    return sql("SELECT to_regclass(%s)", [table])[0][0] is not None


def utc_day(moment):
    return moment.astimezone(UTC).date()


@pytest.fixture
def made_partitions():
    """Partitions a test makes outside a test transaction are dropped after it."""
    before = set(partition_days())
    yield
    for day in set(partition_days()) - before:
        sql(f'DROP TABLE "{partition_name(day)}"')


def test_the_log_table_is_partitioned_by_range_of_request_id(db):
    strategy = sql(
        "SELECT p.partstrat, a.attname FROM pg_partitioned_table p JOIN pg_attribute a "
        "ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
        "WHERE p.partrelid = 'logs_requestlog'::regclass"
    )
    assert strategy == [("r", "id")]
    assert exists(DEFAULT)
    today = utc_day(timezone.now())
    ahead = {today + timedelta(days=n) for n in range(DAYS_AHEAD + 1)}
    assert ahead <= set(partition_days())


def test_the_primary_key_is_the_id_alone_and_every_index_is_on_every_partition(db):
    assert sql(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'logs_requestlog'::regclass AND contype = 'p'"
    ) == [("PRIMARY KEY (id)",)]
    names = {index.name for index in RequestLog._meta.indexes} | {"logs_requestlog_pkey"}
    on_parent = sql("SELECT indexname FROM pg_indexes WHERE tablename = 'logs_requestlog'")
    assert {name for (name,) in on_parent} == names
    children = sql(
        "SELECT c.relname, (SELECT count(*) FROM pg_index x WHERE x.indrelid = c.oid) "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'logs_requestlog'::regclass"
    )
    assert len(children) >= DAYS_AHEAD + 2
    assert {count for _name, count in children} == {len(names)}


def test_nothing_refers_to_a_log_row_so_a_day_can_be_dropped_whole():
    referring = [
        f"{model.__name__}.{field.name}"
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if field.related_model is RequestLog
    ]
    assert referring == []


def test_rows_land_in_the_partition_of_their_day(alice):
    now = timezone.now()
    partitions_make(first_day=utc_day(now - timedelta(days=2)))
    today, before = make_record(alice, at=now), make_record(alice, at=now - timedelta(days=2))
    write_batch([today, before])
    assert table_of(today.id) == partition_name(utc_day(now))
    assert table_of(before.id) == partition_name(utc_day(now - timedelta(days=2)))


def test_the_job_makes_the_partitions_of_the_coming_days_once(db):
    later = timezone.now() + timedelta(days=30)
    days = [utc_day(later) + timedelta(days=n) for n in range(DAYS_AHEAD + 1)]
    assert partitions_make(now=later, dry_run=True) == [(partition_name(d), 0) for d in days]
    assert not exists(partition_name(days[0]))
    assert partitions_make(now=later) == [(partition_name(d), 0) for d in days]
    assert set(days) <= set(partition_days())
    assert partitions_make(now=later) == []


def test_beat_runs_the_job_every_hour(db, settings):
    entry = settings.CELERY_BEAT_SCHEDULE["make-log-partitions"]
    assert (entry["task"], entry["schedule"]) == (make_log_partitions.name, 3600)
    assert make_log_partitions.delay().get() == []  # the coming days have theirs already


def test_a_row_of_a_day_without_partition_waits_in_default_then_moves_to_its_day(alice):
    later = timezone.now() + timedelta(days=20)
    record = make_record(alice, at=later)
    neighbour = make_record(alice, at=later + timedelta(days=9))
    write_batch([record, neighbour])  # the gateway's COPY is never refused for want of a day
    assert table_of(record.id) == table_of(neighbour.id) == DEFAULT
    name = partition_name(utc_day(later))
    assert (name, 1) in partitions_make(now=later, dry_run=True)
    assert (name, 1) in partitions_make(now=later)
    assert table_of(record.id) == name
    assert table_of(neighbour.id) == DEFAULT  # its day is past the days made
    assert RequestLog.objects.filter(pk=record.id).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_running_the_job_at_once_make_each_partition_once(made_partitions):
    later = timezone.now() + timedelta(days=60)
    start = threading.Barrier(2)
    made, errors = [], []

    def worker():
        try:
            start.wait()
            made.extend(partitions_make(now=later))
        except Exception as error:  # reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    days = [utc_day(later) + timedelta(days=n) for n in range(DAYS_AHEAD + 1)]
    assert sorted(made) == [(partition_name(d), 0) for d in days]


def test_retention_drops_the_days_past_the_window_and_keeps_the_rest(alice, settings):
    settings.LOG_RETENTION_DAYS = 3
    # Noon: the cutoff, three days before, is far from a midnight.
    now = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    cutoff = now - timedelta(days=3)
    old_day = utc_day(cutoff - timedelta(days=2))
    partitions_make(first_day=old_day, now=now)
    old = make_record(alice, at=cutoff - timedelta(days=2))
    past_cutoff_same_day = make_record(alice, at=cutoff - timedelta(seconds=1))
    older_in_default = make_record(alice, at=now - timedelta(days=10))
    kept = [past_cutoff_same_day, make_record(alice, at=now)]
    in_default_ahead = make_record(alice, at=now + timedelta(days=30))
    write_batch([old, older_in_default, *kept, in_default_ahead])
    assert table_of(older_in_default.id) == table_of(in_default_ahead.id) == DEFAULT

    assert prune(now=now, dry_run=True)["request logs"] == 2
    assert RequestLog.objects.count() == 5
    assert prune(now=now)["request logs"] == 2
    assert not exists(partition_name(old_day))
    # A day is dropped once all of it is past the window: the day of the cutoff stays.
    assert exists(partition_name(utc_day(cutoff)))
    remaining = set(RequestLog.objects.values_list("id", flat=True))
    assert remaining == {r.id for r in [*kept, in_default_ahead]}
    assert prune(now=now)["request logs"] == 0


def test_the_writer_refuses_a_row_it_has_already(alice):
    record = make_record(alice)
    write_batch([record])
    with pytest.raises(IntegrityError):
        write_batch([make_record(alice), record])
    assert RequestLog.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_flush_written_again_is_neither_written_nor_charged_twice(alice):
    process = Process()
    try:
        fund(alice, 10)
        process.spend(alice, cost=100)
        process.spend(alice, cost=200)
        records = list(process.records)
        process.settle()  # the gateway's flush: write_flush, COPY into the partitioned table
        assert {table_of(r.id) for r in records} == {partition_name(utc_day(timezone.now()))}
        # Again, as a journal replay after a flush whose commit the process did not hear of.
        outcome = process.in_thread(
            write_each, parts_of(records).values(), owner=process.book.owner
        )
    finally:
        process.close()
    assert outcome.written == [alice.pk]
    assert RequestLog.objects.count() == 2
    assert balance_of(alice) == 10_000_000 - 300 == ledger_sum(alice)


LAST_PLAIN = ("logs", "0009_usage_parts")


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.migrate([target] if target else executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_the_rows_of_a_plain_log_into_their_days_and_back(alice):
    now = timezone.now()
    try:
        migrate(LAST_PLAIN)
        assert not partitions.partitioned()
        records = [make_record(alice, at=now - timedelta(days=d), cost=d) for d in (0, 1, 40)]
        foreign = make_record(alice, cost=7)  # an id of no day: not one of ours
        foreign.id = uuid.uuid4()
        # The rows alone: the rollups' tables of today's writer are not there yet.
        RequestLog.objects.bulk_create(
            RequestLog(**{name: getattr(r, name) for name in RECORD_FIELDS})
            for r in [*records, foreign]
        )

        migrate(None)
        assert partitions.partitioned()
        for record in records:
            assert table_of(record.id) == partition_name(utc_day(record.created_at))
        assert table_of(foreign.id) == DEFAULT
        assert sorted(RequestLog.objects.values_list("cost", flat=True)) == [0, 1, 7, 40]

        migrate(LAST_PLAIN)
        assert not partitions.partitioned()
        assert sorted(RequestLog.objects.values_list("cost", flat=True)) == [0, 1, 7, 40]
    finally:
        migrate(None)  # also when a step failed: the tests after this one need it
