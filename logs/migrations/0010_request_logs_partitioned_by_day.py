"""On PostgreSQL, the request log becomes a table partitioned by day (logs.partitions): a range
of ids per UTC day, and a DEFAULT partition for ids of days without one. Its rows are copied
into the new table, so this takes about as long as copying the table once, and the gateway's
writes wait for it: migrate in a quiet hour.

Nothing changes for Django (the model, its primary key and its indexes are the same), nor on
SQLite. Undone, the log is one table again. This migration keeps its own copy of the partition
names and bounds that logs.partitions uses, so that a later change there cannot change it.
"""

import uuid
from datetime import UTC, date, datetime, time, timedelta

from django.db import migrations

DAYS_AHEAD = 7
EPOCH = date(1970, 1, 1)


def _id_floor(day):
    """The smallest request id of a UTC day (RequestLog.id_floor of its midnight)."""
    millis = int(datetime.combine(day, time(), tzinfo=UTC).timestamp() * 1000)
    return uuid.UUID(int=(millis << 80) | (0x7 << 76))


def _partition_sql(table, day):
    name = f"{table}_p{day:%Y%m%d}"
    return (
        f'CREATE TABLE "{name}" PARTITION OF "{table}" '
        f"FOR VALUES FROM ('{_id_floor(day)}') TO ('{_id_floor(day + timedelta(days=1))}')"
    )


def _days_with_rows(cursor, table):
    """The UTC days of the request ids in `table` (of our ids, those of version 7)."""
    millis = "('x' || left(replace(id::text, '-', ''), 12))::bit(48)::bigint"
    cursor.execute(
        f'SELECT DISTINCT {millis} / 86400000 FROM "{table}" '  # noqa: S608 (a model's table)
        "WHERE substr(id::text, 15, 1) = '7'"
    )
    return {EPOCH + timedelta(days=days) for (days,) in cursor.fetchall()}


def _keys_and_indexes(schema_editor, model):
    quote = schema_editor.quote_name
    table = model._meta.db_table
    schema_editor.execute(f"ALTER TABLE {quote(table)} ADD PRIMARY KEY ({quote('id')})")
    for index in model._meta.indexes:
        schema_editor.add_index(model, index)
    schema_editor.execute(f"ANALYZE {quote(table)}")


def partition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("logs", "RequestLog")
    table = model._meta.db_table
    old = f"{table}_unpartitioned"
    today = datetime.now(UTC).date()
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
        # The days of the rows there (none beyond those made ahead: an id of no real day), and
        # the coming days, as the periodic job makes them.
        ahead = [today + timedelta(days=n) for n in range(DAYS_AHEAD + 1)]
        days = {d for d in _days_with_rows(cursor, old) if d <= ahead[-1]} | set(ahead)
        cursor.execute(
            f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS) '
            "PARTITION BY RANGE (id)"
        )
        cursor.execute(f'CREATE TABLE "{table}_default" PARTITION OF "{table}" DEFAULT')
        for day in sorted(days):
            cursor.execute(_partition_sql(table, day))
        cursor.execute(f'INSERT INTO "{table}" SELECT * FROM "{old}"')  # noqa: S608
        # The old table's key and indexes go with it, and their names are free again.
        cursor.execute(f'DROP TABLE "{old}"')
    _keys_and_indexes(schema_editor, model)


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("logs", "RequestLog")
    table = model._meta.db_table
    old = f"{table}_partitioned"
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
        cursor.execute(
            f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
        )
        cursor.execute(f'INSERT INTO "{table}" SELECT * FROM "{old}"')  # noqa: S608
        cursor.execute(f'DROP TABLE "{old}"')  # and its partitions
    _keys_and_indexes(schema_editor, model)


class Migration(migrations.Migration):
    dependencies = [("logs", "0009_usage_parts")]

    operations = [migrations.RunPython(partition, unpartition, elidable=False)]
