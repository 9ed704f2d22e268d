"""The request log's day partitions, on PostgreSQL.

A request id is a UUIDv7 (logs.ids): its first bits are the moment the gateway made it, so a
day of requests is a range of ids. The log table is partitioned by range of id, one partition
per UTC day (migration 0010): the primary key stays the id alone, so a duplicate is refused as
on any table, and every query that bounds the id (the log pages' periods, a request found by
its id) reads only the partitions of its days. Retention drops a day whole instead of deleting
its rows one by one (logs.retention).

A periodic job makes the partitions of the coming days ahead of time. A row whose day has no
partition yet lands in the DEFAULT partition instead of being refused; when that day's
partition is made, its rows move there. SQLite has no partitions: there the table is a table.

Every change takes an advisory lock first, so two workers running the job at once make each
partition once; and it waits for its table locks only LOCK_WAIT, so that it never stands long
in the queue of the writers: what it could not do now, its next run does.
"""

import logging
import re
from datetime import UTC, date, datetime, time, timedelta

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from logs.models import RequestLog

log = logging.getLogger(__name__)

TABLE = RequestLog._meta.db_table
DEFAULT = f"{TABLE}_default"
# Partitions exist this many days ahead: a week of the job not running loses nothing, and rows
# of a day without partition wait in the DEFAULT partition meanwhile.
DAYS_AHEAD = 7
LOCK_WAIT = "2s"
# pg_advisory_xact_lock's key for the partition jobs (the bytes of "logpart").
LOCK_KEY = 0x6C6F6770617274
_NAMED = re.compile(rf"^{TABLE}_p(\d{{8}})$")


def partition_name(day):
    return f"{TABLE}_p{day:%Y%m%d}"


def day_bounds(day):
    """The ids of a UTC day: from its midnight's smallest id up to the next midnight's."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    return RequestLog.id_floor(start), RequestLog.id_floor(start + timedelta(days=1))


def partitioned():
    """Whether the log table is partitioned (PostgreSQL, once migrated)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [TABLE]
        )
        return cursor.fetchone() is not None


def partition_days():
    """The days that have a partition of their own, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)",
            [TABLE],
        )
        names = [name for (name,) in cursor.fetchall()]
    named = [_NAMED.match(name) for name in names]
    return sorted(date.fromisoformat(m[1]) for m in named if m)


def partitions_make(*, now=None, first_day=None, dry_run=False):
    """Makes the partitions of every day from `first_day` (default: today, UTC) to DAYS_AHEAD
    days from now, moving each day's rows out of the DEFAULT partition into its own. Safe to
    run again and from several workers at once. Returns [(partition, rows moved)] made (with
    `dry_run`: that would be made)."""
    if not partitioned():
        return []
    today = (now or timezone.now()).astimezone(UTC).date()
    first = min(first_day or today, today)
    existing = set(partition_days())
    made = []
    for offset in range((today - first).days + DAYS_AHEAD + 1):
        day = first + timedelta(days=offset)
        if day in existing:
            continue
        if dry_run:
            made.append((partition_name(day), _default_rows(*day_bounds(day))))
            continue
        try:
            moved = _make(day)
        except OperationalError as error:  # a lock not granted within LOCK_WAIT
            log.warning("Request log partition of %s not made now (%s); next run", day, error)
            continue
        if moved is not None:
            made.append((partition_name(day), moved))
    return made


def _make(day):
    """Makes one day's partition; None if another worker just did. The table is made apart
    and attached: attaching locks the log table less than CREATE TABLE … PARTITION OF (the
    gateway's inserts go on), and lets the rows of that day wait in DEFAULT meanwhile."""
    name = partition_name(day)
    low, high = day_bounds(day)
    quote = connection.ops.quote_name
    with transaction.atomic(), connection.cursor() as cursor:
        _serialize(cursor)
        cursor.execute("SELECT to_regclass(%s)", [name])
        if cursor.fetchone()[0] is not None:
            return None
        cursor.execute(
            f"CREATE TABLE {quote(name)} "
            f"(LIKE {quote(TABLE)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        # PostgreSQL refuses a partition while DEFAULT holds rows of its range: they move
        # first, with DEFAULT locked so that no other row of that day arrives there meanwhile.
        cursor.execute(f"LOCK TABLE {quote(DEFAULT)} IN ACCESS EXCLUSIVE MODE")
        cursor.execute(
            f"WITH moved AS (DELETE FROM {quote(DEFAULT)} "  # noqa: S608 (names are ours)
            f"WHERE id >= %s AND id < %s RETURNING *) "
            f"INSERT INTO {quote(name)} SELECT * FROM moved",
            [low, high],
        )
        moved = cursor.rowcount
        # Attaching builds the table's indexes, those of the parent (none to build when empty).
        cursor.execute(
            f"ALTER TABLE {quote(TABLE)} ATTACH PARTITION {quote(name)} "
            f"FOR VALUES FROM ('{low}') TO ('{high}')"
        )
    if moved:
        log.warning("Moved %s request log rows of %s from the default partition", moved, day)
    return moved


def partitions_drop_before(cutoff, *, dry_run=False):
    """Drops the partitions of the days wholly before `cutoff`, and deletes from DEFAULT what
    is older. Returns the number of rows gone (that would go, with `dry_run`)."""
    floor = RequestLog.id_floor(cutoff)
    quote = connection.ops.quote_name
    gone = 0
    for day in partition_days():
        if datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC) > cutoff:
            break
        name = partition_name(day)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {quote(name)}")  # noqa: S608 (our name)
            rows = cursor.fetchone()[0]
        if dry_run:
            gone += rows
            continue
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                _serialize(cursor)
                cursor.execute("SELECT to_regclass(%s)", [name])
                if cursor.fetchone()[0] is None:
                    continue  # another worker dropped it
                cursor.execute(f"DROP TABLE {quote(name)}")
        except OperationalError as error:
            log.warning("Request log partition %s not dropped now (%s); next run", name, error)
            continue
        gone += rows
    if dry_run:
        return gone + _default_rows(None, floor)
    return gone + _delete_from_default(floor)


def _default_rows(low, high):
    """The rows in DEFAULT with ids below `high`, and from `low` unless it is None."""
    query = f"SELECT count(*) FROM {connection.ops.quote_name(DEFAULT)} WHERE id < %s"  # noqa: S608
    params = [high]
    if low is not None:
        query, params = f"{query} AND id >= %s", [high, low]
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()[0]


def _delete_from_default(floor, batch=5_000):
    """Rows older than `floor` in DEFAULT (ids no day partition takes, or days never made),
    in short transactions."""
    table = connection.ops.quote_name(DEFAULT)
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN "  # noqa: S608 (our name)
                f"(SELECT id FROM {table} WHERE id < %s LIMIT %s)",
                [floor, batch],
            )
            if not cursor.rowcount:
                return deleted
            deleted += cursor.rowcount


def _serialize(cursor):
    """One partition change at a time across workers; and no long wait for a table lock,
    which would hold back every writer queued behind it."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
    cursor.execute("SELECT set_config('lock_timeout', %s, true)", [LOCK_WAIT])
