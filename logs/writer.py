"""The batched log writer: request rows, rollups and money, in one transaction per flush.

The gateway adds a RequestRecord per request (in memory, no I/O). Once a second it hands the
batch, with the money settlement of the same period (billing.holds), to `write_batch`, which
runs in a database thread:

- the log rows, in one multi-row INSERT;
- per-minute, per-hour and per-day usage rollups, IP-per-day and channel-per-minute totals,
  each as one INSERT … ON CONFLICT DO UPDATE that adds to the existing totals;
- the tokens' last use, and the settlement of balances, holds and the usage ledger.

Either all of it commits or none of it does; a failed flush is retried with the next one. A
batch the database refuses for its data goes through `write_leaving_out_refused`, so that one
bad row cannot stop a process's logging and billing.
"""

import logging
import operator
from collections import defaultdict
from dataclasses import dataclass, fields
from datetime import datetime

from django.db import DataError, IntegrityError, connection, transaction

from billing.holds import holds_settle
from logs.models import (
    ChannelMinute,
    IpDay,
    PlatformMinute,
    RequestLog,
    UsageDay,
    UsageHour,
    UsageMinute,
)
from tokens.models import Token

CHUNK = 500


@dataclass(slots=True)
class RequestRecord:
    """One request as the gateway saw it. Field names are RequestLog's column names."""

    id: object
    created_at: datetime
    user_id: int
    token_id: int | None
    group_id: int | None
    channel_id: int | None
    endpoint: str
    model: str
    stream: bool
    client_ip: str | None
    status: int
    error_code: str
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool
    cost: int
    model_multiplier: object
    completion_multiplier: object
    group_multiplier: object
    call_price: int
    per_call: bool
    latency_ms: int
    ttft_ms: int | None
    retries: int


log = logging.getLogger(__name__)
# What a database says of data it will not store (too large a number, a duplicate id, text it
# cannot encode), as opposed to being unreachable.
REFUSED = (DataError, IntegrityError, ValueError, UnicodeError)

RECORD_FIELDS = [f.name for f in fields(RequestRecord)]
_as_row = operator.attrgetter(*RECORD_FIELDS)


def write_batch(records, *, owner=None, settlement=None):
    """Writes a batch in one transaction. Returns (lost users, lost tokens) of the settlement."""
    lost = ([], [])
    with transaction.atomic():
        if records:
            rows = [_as_row(r) for r in records]
            if connection.vendor == "postgresql":
                _copy(RequestLog, RECORD_FIELDS, rows)
            else:
                _insert(RequestLog, RECORD_FIELDS, rows)
            _rollups(records)
            _last_use(records)
        if settlement:
            lost = holds_settle(owner=owner, settlement=settlement)
    return lost


def write_leaving_out_refused(records, *, owner=None, settlement=None):
    """For a batch the database refused for its data: the money alone first, then the rows in
    halves until the rows it refuses are found; those are logged and left out. Any other error
    stops here.

    Returns (lost users, lost tokens, the records not written because of such an error).
    """
    lost = write_batch([], owner=owner, settlement=settlement)
    pending = [records]
    while pending:
        part = pending.pop()
        try:
            write_batch(part)
        except REFUSED:
            if len(part) == 1:
                log.exception("Left out request log row %s: the database refuses it", part[0].id)
                continue
            middle = len(part) // 2
            pending += [part[middle:], part[:middle]]
        except Exception:
            log.exception("Writing the rest of a refused batch stopped")
            return (*lost, [record for rest in pending for record in rest] + part)
    return (*lost, [])


def _rollups(records):
    minutes, hours, days = defaultdict(_zeros), defaultdict(_zeros), defaultdict(_zeros)
    platform = defaultdict(_zeros)
    ips, channels = {}, defaultdict(lambda: [0, 0, 0])
    for r in records:
        minute = r.created_at.replace(second=0, microsecond=0)
        key = (r.user_id, r.token_id or 0, r.group_id or 0, r.model, r.status < 400)
        sums = (1, r.prompt_tokens, r.completion_tokens, r.cost, r.latency_ms)
        for totals in (
            minutes[(minute, *key)],
            hours[(minute.replace(minute=0), *key)],
            days[(minute.date(), *key)],
            platform[(minute, r.model, key[4])],
        ):
            for i, value in enumerate(sums):
                totals[i] += value
        if r.client_ip:
            ip_key = (minute.date(), r.user_id, r.token_id or 0, r.client_ip)
            seen = ips.get(ip_key)
            if seen is None:
                ips[ip_key] = [1, r.created_at, r.created_at]
            else:
                seen[0] += 1
                seen[1] = min(seen[1], r.created_at)
                seen[2] = max(seen[2], r.created_at)
        if r.channel_id:
            channel = channels[(minute, r.channel_id)]
            channel[0] += 1
            channel[1] += r.status >= 400
            channel[2] += r.latency_ms
    for model, table in (
        (UsageMinute, minutes),
        (UsageHour, hours),
        (UsageDay, days),
        (PlatformMinute, platform),
    ):
        _upsert_add(model, model.KEY_FIELDS, model.SUM_FIELDS, table)
    _upsert_add(
        ChannelMinute, ChannelMinute.KEY_FIELDS, ("requests", "failures", "latency_ms"), channels
    )
    _upsert_ip_days(ips)


def _zeros():
    return [0, 0, 0, 0, 0]


def _last_use(records):
    """Each token's last request time and address."""
    latest = {}
    for r in records:
        if r.token_id and (
            r.token_id not in latest or latest[r.token_id].created_at < r.created_at
        ):
            latest[r.token_id] = r
    if not latest:
        return
    if connection.vendor != "postgresql":
        for token_id, r in sorted(latest.items()):
            Token.objects.filter(pk=token_id).exclude(last_used_at__gt=r.created_at).update(
                last_used_at=r.created_at, last_ip=r.client_ip
            )
        return
    # One statement for the whole batch: COPY the values in, UPDATE … FROM them.
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS incoming_token_use")
        cursor.execute(
            "CREATE TEMPORARY TABLE incoming_token_use "
            "(id bigint, used_at timestamptz, ip inet) ON COMMIT DROP"
        )
        with cursor.cursor.copy("COPY incoming_token_use (id, used_at, ip) FROM STDIN") as copy:
            for token_id, r in sorted(latest.items()):
                copy.write_row((token_id, r.created_at, r.client_ip))
        table = connection.ops.quote_name(Token._meta.db_table)
        # Lock in id order first: the flushes of other processes take the same rows.
        cursor.execute(
            f"SELECT id FROM {table} WHERE id = ANY(%s) ORDER BY id FOR UPDATE",  # noqa: S608
            [sorted(latest)],
        )
        cursor.execute(
            f"UPDATE {table} SET last_used_at = i.used_at, last_ip = i.ip "  # noqa: S608
            f"FROM incoming_token_use i WHERE {table}.id = i.id "
            f"AND ({table}.last_used_at IS NULL OR {table}.last_used_at < i.used_at)"
        )


def _columns(model, names):
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    return [by_attname[name] for name in names]


def _copy(model, names, rows):
    """COPY … FROM STDIN: the fastest way into PostgreSQL, and no SQL text to parse."""
    quote = connection.ops.quote_name
    columns = ", ".join(quote(c.column) for c in _columns(model, names))
    # psycopg's own errors become Django's (DataError, IntegrityError…), as for any query.
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


def _insert(model, names, rows, suffix=""):
    """One multi-row INSERT per chunk, with values prepared by the model's own fields."""
    columns = _columns(model, names)
    quote = connection.ops.quote_name
    # Table and column names come from the models, never from input.
    names_sql = ", ".join(quote(c.column) for c in columns)
    head = f"INSERT INTO {quote(model._meta.db_table)} ({names_sql}) VALUES "  # noqa: S608
    placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            params = []
            for row in chunk:
                params.extend(
                    column.get_db_prep_save(value, connection)
                    for column, value in zip(columns, row, strict=True)
                )
            cursor.execute(head + ", ".join([placeholder] * len(chunk)) + suffix, params)


def _upsert_add(model, key_names, sum_names, table):
    """INSERT the totals, or add them to the row of the same key."""
    if not table:
        return
    quote = connection.ops.quote_name
    db_table = quote(model._meta.db_table)
    updates = ", ".join(
        f"{quote(c.column)} = {db_table}.{quote(c.column)} + excluded.{quote(c.column)}"
        for c in _columns(model, sum_names)
    )
    rows = [(*key, *sums) for key, sums in table.items()]
    _upsert(model, [*key_names, *sum_names], key_names, rows, updates)


def _upsert_ip_days(ips):
    if not ips:
        return
    db_table = connection.ops.quote_name(IpDay._meta.db_table)
    updates = (
        f"requests = {db_table}.requests + excluded.requests,"
        f" first_seen = CASE WHEN excluded.first_seen < {db_table}.first_seen"
        f" THEN excluded.first_seen ELSE {db_table}.first_seen END,"
        f" last_seen = CASE WHEN excluded.last_seen > {db_table}.last_seen"
        f" THEN excluded.last_seen ELSE {db_table}.last_seen END"
    )
    rows = [(*key, *seen) for key, seen in ips.items()]
    names = [*IpDay.KEY_FIELDS, "requests", "first_seen", "last_seen"]
    _upsert(IpDay, names, IpDay.KEY_FIELDS, rows, updates)


def _upsert(model, names, key_names, rows, updates):
    """INSERT … ON CONFLICT (key) DO UPDATE SET `updates`, rows sorted by key so that the
    flushes of several processes lock rows in the same order. On PostgreSQL the rows go in by
    COPY to a temporary table first: no SQL text to build or parse per value."""
    quote = connection.ops.quote_name
    keys = ", ".join(quote(c.column) for c in _columns(model, key_names))
    conflict = f" ON CONFLICT ({keys}) DO UPDATE SET {updates}"
    rows.sort()
    if connection.vendor != "postgresql":
        _insert(model, names, rows, conflict)
        return
    columns = ", ".join(quote(c.column) for c in _columns(model, names))
    table = quote(model._meta.db_table)
    scratch = quote(f"incoming_{model._meta.db_table}")
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {scratch}")
        cursor.execute(
            f"CREATE TEMPORARY TABLE {scratch} ON COMMIT DROP AS "  # noqa: S608 (model names)
            f"SELECT {columns} FROM {table} WITH NO DATA"
        )
        with cursor.cursor.copy(f"COPY {scratch} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {scratch} "  # noqa: S608
            f"ORDER BY {keys}{conflict}"
        )
