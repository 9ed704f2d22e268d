"""The batched log writer: request rows, rollups and money, in one transaction per flush.

The gateway adds a RequestRecord per request (in memory, no I/O). Once a second it hands the
batch, with the money settlement of the same period (billing.holds), to `write_batch`, which
runs in a database thread:

- the log rows, in one multi-row INSERT;
- per-minute, per-hour and per-day usage rollups, IP-per-day and channel-per-minute totals,
  each as one INSERT … ON CONFLICT DO UPDATE that adds to the existing totals;
- the tokens' last use, and the settlement of balances, holds and the usage ledger.

Either all of it commits or none of it does; a failed flush is retried with the next one.
"""

import operator
from collections import defaultdict
from dataclasses import dataclass, fields
from datetime import datetime

from django.db import connection, transaction

from billing.holds import holds_settle
from logs.models import ChannelMinute, IpDay, RequestLog, UsageDay, UsageHour, UsageMinute
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


def _rollups(records):
    minutes, hours, days = defaultdict(_zeros), defaultdict(_zeros), defaultdict(_zeros)
    ips, channels = {}, defaultdict(lambda: [0, 0, 0])
    for r in records:
        minute = r.created_at.replace(second=0, microsecond=0)
        key = (r.user_id, r.token_id or 0, r.group_id or 0, r.model, r.status < 400)
        sums = (1, r.prompt_tokens, r.completion_tokens, r.cost, r.latency_ms)
        for table, bucket in (
            (minutes, minute),
            (hours, minute.replace(minute=0)),
            (days, minute.date()),
        ):
            totals = table[(bucket, *key)]
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
    for model, table in ((UsageMinute, minutes), (UsageHour, hours), (UsageDay, days)):
        _upsert_add(model, model.KEY_FIELDS, model.SUM_FIELDS, table)
    _upsert_add(
        ChannelMinute, ChannelMinute.KEY_FIELDS, ("requests", "failures", "latency_ms"), channels
    )
    _upsert_ip_days(ips)


def _zeros():
    return [0, 0, 0, 0, 0]


def _last_use(records):
    latest = {}
    for r in records:
        if r.token_id and (
            r.token_id not in latest or latest[r.token_id].created_at < r.created_at
        ):
            latest[r.token_id] = r
    for token_id, r in sorted(latest.items()):
        Token.objects.filter(pk=token_id).exclude(last_used_at__gt=r.created_at).update(
            last_used_at=r.created_at, last_ip=r.client_ip
        )


def _columns(model, names):
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    return [by_attname[name] for name in names]


def _copy(model, names, rows):
    """COPY … FROM STDIN: the fastest way into PostgreSQL, and no SQL text to parse."""
    quote = connection.ops.quote_name
    columns = ", ".join(quote(c.column) for c in _columns(model, names))
    with (
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
    keys = ", ".join(quote(c.column) for c in _columns(model, key_names))
    updates = ", ".join(
        f"{quote(c.column)} = {db_table}.{quote(c.column)} + excluded.{quote(c.column)}"
        for c in _columns(model, sum_names)
    )
    # Sorted, so that concurrent flushes of several processes lock rows in the same order.
    rows = sorted((*key, *sums) for key, sums in table.items())
    _insert(model, [*key_names, *sum_names], rows, f" ON CONFLICT ({keys}) DO UPDATE SET {updates}")


def _upsert_ip_days(ips):
    if not ips:
        return
    quote = connection.ops.quote_name
    db_table = quote(IpDay._meta.db_table)
    keys = ", ".join(quote(c.column) for c in _columns(IpDay, IpDay.KEY_FIELDS))
    suffix = (
        f" ON CONFLICT ({keys}) DO UPDATE SET requests = {db_table}.requests + excluded.requests,"
        f" first_seen = CASE WHEN excluded.first_seen < {db_table}.first_seen"
        f" THEN excluded.first_seen ELSE {db_table}.first_seen END,"
        f" last_seen = CASE WHEN excluded.last_seen > {db_table}.last_seen"
        f" THEN excluded.last_seen ELSE {db_table}.last_seen END"
    )
    rows = sorted((*key, *seen) for key, seen in ips.items())
    _insert(IpDay, [*IpDay.KEY_FIELDS, "requests", "first_seen", "last_seen"], rows, suffix)
