"""The batched log writer: request rows, rollups and the money they cost, per flush.

The gateway adds a RequestRecord per request (in memory, and in its journal). Once a second it
hands what it gathered, with the lease money it gives back (billing.holds), to `write_flush`,
which runs in a database thread and writes, in one transaction:

- the log rows;
- their usage totals per minute, appended to the pending usage (logs.models.UsagePending),
  which `usage_fold` adds up into the per-minute, per-hour and per-day usage rollups and the
  platform's minutes every few seconds: a busy key's many flushes become one update of each
  rollup row, and flushes never lock a rollup row, so they never wait on each other's;
- each channel's minutes and IP-per-day totals, each an INSERT … ON CONFLICT DO UPDATE that
  adds to the totals;
- the money, by billing alone: billing.settlement.usages_settle charges, per account, what the
  rows cost (balance, hold, token quotas, one usage ledger row) and releases the lease money
  given back. Last but for the tokens' last use, because it locks the account rows that other
  processes' requests wait for when they take a lease: they stay locked for the settlement's
  few statements and the commit, not for the writing of the rows;
- the tokens' last use (token rows: after their accounts', the order every transaction locks
  them in).

On PostgreSQL the records go in once, by a binary COPY into a temporary table, and PostgreSQL
writes the log rows and every total from it (`_record_staged`); on SQLite, the embedded
default, Python totals them (`_rollups`).

If the database refuses any of it for its data (a CHECK, a duplicate id, a value out of
range), nothing of that transaction stays, and each account is written on its own instead
(`write_each`): its rows are inserted unless they exist (so a row is never written or charged
twice), and exactly the new ones are charged. What the database still refuses is split until
the refused rows are found; those, and only those, are set aside for the gateway to keep and
retry. One account's refusal never holds back another's money or rows.
"""

import logging
import operator
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, fields
from datetime import datetime

from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import Q

from billing.holds import holds_of
from billing.ledger import BillingError
from billing.settlement import (
    Usage,
    unsettled_cleared,
    unsettled_record,
    usage_settle,
    usages_settle,
)
from logs.models import (
    ChannelMinute,
    IpDay,
    PlatformMinute,
    RequestLog,
    UsageDay,
    UsageHour,
    UsageMinute,
    UsagePending,
)
from tokens.models import Token

CHUNK = 500
# Transactions one refused account may take per flush while its refused rows are looked for;
# the search goes on at its next retry.
SPLIT_BUDGET = 32


@dataclass(slots=True)
class RequestRecord:
    """One request as the gateway saw it. Field names are RequestLog's column names, but for
    `quota_hold`: whether its cost came from the token's quota lease as well."""

    id: object
    created_at: datetime
    user_id: int
    token_id: int | None
    line_id: int | None
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
    line_multiplier: object
    call_price: int
    per_call: bool
    latency_ms: int
    ttft_ms: int | None
    retries: int
    # The usage's parts priced apart, and their multipliers (0 on rows with no charge). Defaults,
    # so that a journal written before they existed still replays.
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    reasoning_tokens: int = 0
    image_tokens: int = 0
    cache_read_multiplier: object = 0
    cache_write_5m_multiplier: object = 0
    cache_write_1h_multiplier: object = 0
    audio_input_multiplier: object = 0
    audio_output_multiplier: object = 0
    quota_hold: bool = False
    # False for a refused request past its token's allowance of logged refusals a minute: it
    # counts in the rollups but has no row of its own, so refusals cannot fill the table.
    logged: bool = True


log = logging.getLogger(__name__)
# What a database says of data it will not store (too large a number, a duplicate id, text it
# cannot encode, a CHECK), as opposed to being unreachable, and what psycopg says of a number
# beyond 64 bits before sending it; and a settlement billing refuses, which only that
# account's rows wait on.
REFUSED = (DataError, IntegrityError, ValueError, OverflowError, UnicodeError, BillingError)

RECORD_FIELDS = [f.name for f in fields(RequestRecord) if f.name not in {"quota_hold", "logged"}]
_as_row = operator.attrgetter(*RECORD_FIELDS)
# A pending usage row's key: its buckets, then the rollups' other keys.
PENDING_KEYS = ("bucket", "hour", "day", "user_id", "token_id", "line_id", "model", "ok")


@dataclass
class Part:
    """One account's share of a flush: its log rows, and the lease money given back."""

    user_id: int
    records: list = field(default_factory=list)
    release: int = 0
    quota_releases: dict = field(default_factory=dict)

    def merge(self, other):
        self.records += other.records
        self.release += other.release
        for token_id, amount in other.quota_releases.items():
            self.quota_releases[token_id] = self.quota_releases.get(token_id, 0) + amount
        return self

    def releases(self, release_all=False):
        return bool(release_all or self.release or self.quota_releases)

    @property
    def cost(self):
        return sum(r.cost for r in self.records)

    def usage(self, new_records):
        """The money of this part, for the rows in `new_records` (those not written before)."""
        usage = Usage(
            user_id=self.user_id, release=self.release, quota_releases=dict(self.quota_releases)
        )
        for r in new_records:
            usage.add_request(r.token_id, r.cost, quota=r.quota_hold)
        return usage


def parts_of(records, settlement=None):
    """Splits a flush by account: {user id: Part}."""
    parts = {}
    for r in records:
        part = parts.get(r.user_id)
        if part is None:
            part = parts[r.user_id] = Part(r.user_id)
        part.records.append(r)
    if settlement:
        for user_id, amount in settlement.accounts.items():
            parts.setdefault(user_id, Part(user_id)).release += amount
        for token_id, (user_id, amount) in settlement.quotas.items():
            parts.setdefault(user_id, Part(user_id)).quota_releases[token_id] = amount
    return parts


@dataclass
class Outcome:
    """What became of a flush's parts."""

    written: list = field(default_factory=list)  # user ids whose parts went through
    # user id → ([Parts set aside], the last error): the pieces its refused rows are in
    refused: dict = field(default_factory=dict)
    unsent: list = field(default_factory=list)  # Parts not tried: the database went away
    lost_users: list = field(default_factory=list)  # leases whose holds the reaper released
    lost_tokens: list = field(default_factory=list)

    def add(self, other):
        self.written += other.written
        for user_id, (pieces, error) in other.refused.items():
            earlier = self.refused.get(user_id, ([], error))[0]
            self.refused[user_id] = (earlier + pieces, error)
        self.unsent += other.unsent
        self.lost_users += other.lost_users
        self.lost_tokens += other.lost_tokens


def write_flush(parts, *, owner, release_all=False, keep=()):
    """Writes a gateway process's flush: all in one transaction, or, if the database refuses
    some of it, account by account. Raises only if the database cannot be reached at all.
    With `release_all` (the process stops) every hold it has left is released as well, but
    on the accounts in `keep`."""
    if release_all:
        held = holds_of(owner) - {part.user_id for part in parts} - set(keep)
        parts = [*parts, *(Part(user_id) for user_id in sorted(held))]
    outcome = Outcome()
    try:
        with transaction.atomic():
            records = [r for part in parts for r in part.records]
            _record(records)
            _settle_all(parts, owner, outcome, release_all=release_all)
            _record_last_use(records)
    except REFUSED:
        return write_each(parts, owner=owner, release_all=release_all)
    outcome.written = [part.user_id for part in parts]
    return outcome


def write_each(parts, *, owner, release_all=False, errors=None):
    """Writes each account's parts in transactions of their own; rows that already exist are
    neither written nor charged again. A refused part is split to find its refused rows,
    within SPLIT_BUDGET transactions per account per call; what is left is split further
    next time. With `release_all` the owner is gone (a replay of its journal, or its stop):
    each account's holds of that owner are released once its rows are settled. `errors`
    gives the error each account was refused with before."""
    outcome = Outcome()
    pending = sorted(parts, key=lambda p: p.user_id)
    budgets = {}
    while pending:
        part = pending.pop(0)
        budget = budgets.setdefault(part.user_id, [SPLIT_BUDGET])
        earlier = (errors or {}).get(part.user_id)
        try:
            refused = _write_splitting(part, owner, release_all, outcome, budget, earlier)
        except Exception:
            log.exception("Writing the gateway's log rows and usage stopped: database error")
            outcome.unsent = [part, *pending]
            break
        if refused is None:
            if part.user_id not in outcome.refused:
                outcome.written.append(part.user_id)
            continue
        pieces, error = refused
        if part.user_id in outcome.written:
            outcome.written.remove(part.user_id)
        outcome.add(Outcome(refused={part.user_id: (pieces, error)}))
    for user_id, (pieces, error) in outcome.refused.items():
        log.error(
            "Set aside %s log rows (%s micro-dollars) of user %s: the database refuses them "
            "(%s); they are kept and retried",
            sum(len(piece.records) for piece in pieces),
            sum(piece.cost for piece in pieces),
            user_id,
            error,
        )
    return outcome


def refusals_report(outcome, *, owner, retried=()):
    """Shows staff what the database refused (UnsettledUsage), and that what it refused before
    (`retried` accounts) went through once it did."""
    unsettled_cleared(owner=owner, user_ids=[u for u in outcome.written if u in set(retried)])
    for user_id, (pieces, error) in outcome.refused.items():
        unsettled_record(
            owner=owner,
            user_id=user_id,
            requests=sum(len(piece.records) for piece in pieces),
            amount=sum(piece.cost for piece in pieces),
            error=error,
        )


def _write_splitting(part, owner, release_all, outcome, budget, error=None):
    """Writes one account's part; if refused, each half of its rows, down to single rows, and
    then its releases. `budget` ([transactions left]) bounds the work; a part it cannot try
    or split now is refused as it is, with `error`, the last one known. Returns None, or
    ([the pieces that were refused], the last error)."""
    if budget[0] <= 0:
        return [part], error or "not tried yet"
    tried = _write_part(part, owner, release_all, outcome, budget)
    if tried is None:
        return None
    error = tried
    if not part.records or (len(part.records) == 1 and not part.releases(release_all)):
        return [part], error
    pieces = []
    middle = len(part.records) // 2
    for rows in (part.records[:middle], part.records[middle:]):
        if rows:
            half = Part(part.user_id, rows)
            failed = _write_splitting(half, owner, False, outcome, budget, error)
            if failed is not None:
                pieces += failed[0]
                error = failed[1]
    rest = Part(part.user_id, [], part.release, dict(part.quota_releases))
    if pieces and release_all:
        # The owner is gone: its holds stay until the refused rows are charged from them.
        return [*pieces, rest], error
    if rest.releases(release_all):
        failed = _write_splitting(rest, owner, release_all, outcome, budget, error)
        if failed is not None:
            pieces += failed[0]
            error = failed[1]
    return (pieces, error) if pieces else None


def _write_part(part, owner, release_all, outcome, budget):
    """One account's rows and money in one transaction. Returns None, or why it was refused."""
    budget[0] -= 1
    try:
        with transaction.atomic():
            new = _insert_new(part.records)
            _record(new, with_rows=False)
            _settle(part, new, owner, outcome, release_all=release_all)
            _record_last_use(new)
    except REFUSED as error:
        return _describe(error)
    return None


def _describe(error):
    return " ".join(str(error).split())[:500]


def _settle(part, new_records, owner, outcome, release_all=False):
    lost = usage_settle(owner=owner, usage=part.usage(new_records), release_all=release_all)
    _count_lost(part.user_id, lost, outcome)


def _settle_all(parts, owner, outcome, release_all=False):
    """Every account of a flush at once: its transaction, and the wait of other processes
    for the rows it locks, stay short however many accounts it charges."""
    usages = [part.usage(part.records) for part in parts]
    lost = usages_settle(owner=owner, usages=usages, release_all=release_all)
    for part in sorted(parts, key=lambda p: p.user_id):
        _count_lost(part.user_id, lost[part.user_id], outcome)


def _count_lost(user_id, lost, outcome):
    if lost.account:
        outcome.lost_users.append(user_id)
    outcome.lost_tokens += lost.tokens


def write_batch(records, *, fold=True):
    """Log rows and their rollups alone, in one transaction, for rows whose money is settled
    elsewhere or not at all (imported history, test fixtures). Folded at once, unless `fold`
    is False: what is imported shows on the pages when this returns."""
    with transaction.atomic():
        _record(records)
        _record_last_use(records)
        if fold:
            usage_fold()


def _record(records, *, with_rows=True):
    """The log rows (unless `with_rows` is False: written already) and the pending usage, IP
    and channel totals of `records`. Before the money: these lock no account or token row, so
    the rows the settlement locks stay locked only for the settlement and the commit (requests
    of other processes taking leases wait for them)."""
    if not records:
        return
    if connection.vendor == "postgresql":
        _record_staged(records, with_rows=with_rows)
        return
    if with_rows:
        rows = [_as_row(r) for r in records if r.logged]
        if rows:
            _insert_rows(RequestLog, RECORD_FIELDS, rows)
    _rollups(records)


def _record_last_use(records):
    """The tokens' last use of `records` (after `_record`, in its transaction): after the
    settlement, which locks the accounts before their tokens, as everything else does."""
    if not records:
        return
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for statement in _LAST_USE_STAGED:
                cursor.execute(statement)
        return
    _last_use(records)


def _insert_new(records):
    """Inserts the rows whose id is not in the table yet; returns those records (and the
    records that have no row: a replay may count those twice, for no money)."""
    rows = [_as_row(r) for r in records if r.logged]
    if not rows:
        return list(records)
    suffix = " ON CONFLICT (id) DO NOTHING RETURNING id"
    written = {
        uuid.UUID(str(value)) for (value,) in _insert_rows(RequestLog, RECORD_FIELDS, rows, suffix)
    }
    return [r for r in records if r.id in written or not r.logged]


def _rollups(records):
    """The usage totals appended to the pending usage (see usage_fold), and the channels' and
    addresses' totals added to their tables: totalled in Python (SQLite; PostgreSQL totals
    them itself, see _record_staged)."""
    pending = defaultdict(_zeros)
    ips, channels = {}, defaultdict(lambda: [0, 0, 0])
    for r in records:
        minute = r.created_at.replace(second=0, microsecond=0)
        key = (r.user_id, r.token_id or 0, r.line_id or 0, r.model, r.status < 400)
        sums = (
            1,
            r.prompt_tokens,
            r.completion_tokens,
            r.cost,
            r.latency_ms,
            r.cache_read_tokens,
            r.cache_write_5m_tokens + r.cache_write_1h_tokens,
        )
        totals = pending[(minute, minute.replace(minute=0), minute.date(), *key)]
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
    _insert_rows(
        UsagePending,
        [*PENDING_KEYS, *UsagePending.SUM_FIELDS],
        [(*key, *sums) for key, sums in pending.items()],
    )
    _upsert_add(
        ChannelMinute, ChannelMinute.KEY_FIELDS, ("requests", "failures", "latency_ms"), channels
    )
    _upsert_ip_days(ips)


def _zeros():
    return [0] * len(UsageMinute.SUM_FIELDS)


def _last_use(records):
    """Each token's last request time and address: what the log knows of a token. Its quota
    counters are money, and billing's (billing.settlement.usage_settle).

    To the minute, as pages show it: a token whose last use is in the same minute from the
    same address is left alone, so that a busy token's row is not locked and rewritten by
    every flush (the addresses of every request are in the IP-per-day totals)."""
    latest = {}
    for r in records:
        if r.token_id and (
            r.token_id not in latest or latest[r.token_id].created_at < r.created_at
        ):
            latest[r.token_id] = r
    if not latest:
        return
    for token_id, r in sorted(latest.items()):
        minute = r.created_at.replace(second=0, microsecond=0)
        ip = r.client_ip or None
        Token.objects.filter(pk=token_id).filter(
            Q(last_used_at__isnull=True)
            | Q(last_used_at__lt=minute)
            | (Q(last_used_at__lt=r.created_at) & ~Q(last_ip=ip))
        ).update(last_used_at=r.created_at, last_ip=ip)


def _columns(model, names):
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    return [by_attname[name] for name in names]


def _insert_rows(model, names, rows, suffix=""):
    """One multi-row INSERT per chunk, with values prepared by the model's own fields. Returns
    the rows a RETURNING `suffix` gives back."""
    columns = _columns(model, names)
    quote = connection.ops.quote_name
    # Table and column names come from the models, never from input.
    names_sql = ", ".join(quote(c.column) for c in columns)
    head = f"INSERT INTO {quote(model._meta.db_table)} ({names_sql}) VALUES "  # noqa: S608
    placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
    returned = []
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
            if "RETURNING" in suffix:
                returned += cursor.fetchall()
    return returned


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
    """INSERT … ON CONFLICT (key) DO UPDATE SET `updates`, rows sorted by key."""
    quote = connection.ops.quote_name
    keys = ", ".join(quote(c.column) for c in _columns(model, key_names))
    rows.sort()
    _insert_rows(model, names, rows, f" ON CONFLICT ({keys}) DO UPDATE SET {updates}")


# PostgreSQL: the records go in once, by a binary COPY into a temporary table of the
# transaction, and PostgreSQL writes the log rows and every total from there. Python
# only hands each record's values over: the gateway's flush runs in the gateway's process,
# where each millisecond of Python holds the GIL against the event loop.
STAGING = "incoming_requests"
# The multipliers go over as text, cast by the INSERT into the log: psycopg's binary numeric
# takes some 3 µs of Python a value, where str() takes a fifth of that (8 of them a record).
_DECIMALS = [
    f.attname
    for f in _columns(RequestLog, RECORD_FIELDS)
    if f.get_internal_type() == "DecimalField"
]
_PLAIN = [name for name in RECORD_FIELDS if name not in _DECIMALS]
STAGED_FIELDS = [*_PLAIN, "logged", *_DECIMALS]
_as_staged_plain = operator.attrgetter(*_PLAIN, "logged")
_decimals_of = operator.attrgetter(*_DECIMALS)


def _staged_row(record):
    return (*_as_staged_plain(record), *map(str, _decimals_of(record)))


# A staged column's type by its log column's kind. Integers of every size are bigint and the
# address is text: the INSERT into the log casts them, so that a value the log cannot hold is
# refused there, as a DataError, like any refused row.
_STAGED_KINDS = {
    "UUIDField": "uuid",
    "DateTimeField": "timestamptz",
    "BooleanField": "boolean",
    "CharField": "text",
    "GenericIPAddressField": "text",
}
_STAGED_TYPES = [
    *(_STAGED_KINDS.get(f.get_internal_type(), "bigint") for f in _columns(RequestLog, _PLAIN)),
    "boolean",
    *(["text"] * len(_DECIMALS)),
]
_CREATE_STAGING = (
    f"CREATE TEMPORARY TABLE {STAGING} ("
    + ", ".join(f"{name} {kind}" for name, kind in zip(STAGED_FIELDS, _STAGED_TYPES, strict=True))
    + ") ON COMMIT DROP"
)
_IP = "NULLIF(client_ip, '')::inet"
# The buckets in UTC, as _rollups makes them: the minute, the hour, the date.
_MINUTE = "date_trunc('minute', created_at, 'UTC')"
_DAY = "(created_at AT TIME ZONE 'UTC')::date"


def _add_up(model, values, sums, *, source=STAGING, where="", total=True, updates=None):
    """INSERT … SELECT `values` (the key's columns, then the `sums`) FROM `source`, totalled by
    key (unless `total` is False: totalled already) and in key order, so that the flushes of
    several processes lock rows in the same order; or add them to the row of that key."""
    table = model._meta.db_table
    keys = model.KEY_FIELDS
    by_key = ", ".join(str(n) for n in range(1, len(keys) + 1))
    updates = updates or ", ".join(f"{s} = {table}.{s} + excluded.{s}" for s in sums)
    clauses = [
        f"INSERT INTO {table} ({', '.join([*keys, *sums])})",
        f"SELECT {', '.join(values)} FROM {source}",  # noqa: S608 (names from models)
        where,
        total and f"GROUP BY {by_key}",
        f"ORDER BY {by_key} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}",
    ]
    return " ".join(filter(None, clauses))


def _pending_staged():
    """One statement: the staged requests totalled by minute, user, token, line, model and
    outcome (no token or line is 0), appended to the pending usage."""
    totals = {
        "requests": "count(*)",
        "prompt_tokens": "sum(prompt_tokens)",
        "completion_tokens": "sum(completion_tokens)",
        "cost": "sum(cost)",
        "latency_ms": "sum(latency_ms)",
        "cache_read_tokens": "sum(cache_read_tokens)",
        "cache_write_tokens": "sum(cache_write_5m_tokens + cache_write_1h_tokens)",
    }
    sums = UsagePending.SUM_FIELDS
    return (
        f"INSERT INTO {UsagePending._meta.db_table} ({', '.join([*PENDING_KEYS, *sums])}) "  # noqa: S608
        f"SELECT {_MINUTE}, date_trunc('hour', created_at, 'UTC'), {_DAY}, user_id, "
        "coalesce(token_id, 0), coalesce(line_id, 0), model, status < 400, "
        + ", ".join(totals[s] for s in sums)
        + f" FROM {STAGING} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
    )


def _folds(source, *, by_minute=False):
    """The pending usage of `source` added up into each rollup: {name: INSERT … ON CONFLICT},
    each in key order, so that a fold locks rows in the order any other would. With
    `by_minute`, `source` is totalled by minute and key already: the minute rollup's rows."""
    sums = UsagePending.SUM_FIELDS
    keys = PENDING_KEYS[3:]
    summed = [f"sum({s})" for s in sums]
    # SQLite needs a WHERE before ON CONFLICT, to read it as the INSERT's.
    each = {"source": source, "where": "WHERE true"}
    minute = ["bucket", *keys, *(sums if by_minute else summed)]
    return {
        "minute": _add_up(UsageMinute, minute, sums, total=not by_minute, **each),
        "hour": _add_up(UsageHour, ["hour", *keys, *summed], sums, **each),
        "day": _add_up(UsageDay, ["day", *keys, *summed], sums, **each),
        "platform": _add_up(PlatformMinute, ["bucket", "model", "ok", *summed], sums, **each),
    }


def _fold_staged():
    """One statement: every pending row deleted, and what they add up to added to the rollups.
    Rows a flush commits meanwhile are not seen, and wait for the next fold; so each pending
    row is added exactly once, however the folds and flushes of several processes overlap."""
    sums = UsagePending.SUM_FIELDS
    columns = ", ".join([*PENDING_KEYS, *sums])
    # bigint, as the rollups' columns: the hours' and days' totals of these are then kept in
    # a few bytes a group, where numeric sums outgrow work_mem and spill to disk.
    by_minute = (
        f"SELECT {', '.join(PENDING_KEYS)}, "  # noqa: S608 (names from models)
        + ", ".join(f"sum({s})::bigint AS {s}" for s in sums)
        + f" FROM moved GROUP BY {', '.join(str(n) for n in range(1, len(PENDING_KEYS) + 1))}"
    )
    added = ", ".join(f"{name} AS ({sql})" for name, sql in _folds("m", by_minute=True).items())
    return (
        f"WITH moved AS (DELETE FROM {UsagePending._meta.db_table} RETURNING {columns}), "  # noqa: S608
        f"m AS MATERIALIZED ({by_minute}), {added} SELECT count(*) FROM moved"
    )


def _staged_value(name):
    if name == "client_ip":
        return _IP
    return f"{name}::numeric" if name in _DECIMALS else name


# A plain INSERT: a row that is there already is refused, and write_each finds it. In the
# order of the log's indexes, most of which lead with the user: each index page is found once
# for the rows that go into it.
_INSERT_STAGED = (
    f"INSERT INTO {RequestLog._meta.db_table} "  # noqa: S608 (names from models)
    f"({', '.join(c.column for c in _columns(RequestLog, RECORD_FIELDS))}) "
    f"SELECT {', '.join(_staged_value(f) for f in RECORD_FIELDS)} "
    f"FROM {STAGING} WHERE logged ORDER BY user_id, id"
)
_IP_DAYS = IpDay._meta.db_table
_ROLLUPS_STAGED = [
    _pending_staged(),
    _add_up(
        ChannelMinute,
        [
            _MINUTE,
            "channel_id",
            "count(*)",
            "count(*) FILTER (WHERE status >= 400)",
            "sum(latency_ms)",
        ],
        ("requests", "failures", "latency_ms"),
        where="WHERE channel_id <> 0",
    ),
    _add_up(
        IpDay,
        [
            _DAY,
            "user_id",
            "coalesce(token_id, 0)",
            _IP,
            "count(*)",
            "min(created_at)",
            "max(created_at)",
        ],
        ("requests", "first_seen", "last_seen"),
        where="WHERE client_ip <> ''",
        updates=(
            f"requests = {_IP_DAYS}.requests + excluded.requests, "
            f"first_seen = least({_IP_DAYS}.first_seen, excluded.first_seen), "
            f"last_seen = greatest({_IP_DAYS}.last_seen, excluded.last_seen)"
        ),
    ),
]
# The tokens' last use, to the minute (see _last_use): the rows of those whose minute or
# address changed locked in id order first, as the flushes of other processes take the same
# rows; then each of those tokens' latest request.
_LATEST_USE = (
    f"(SELECT DISTINCT ON (token_id) token_id, created_at, {_IP} AS ip FROM {STAGING} "  # noqa: S608
    "WHERE token_id <> 0 ORDER BY token_id, created_at DESC) AS latest"
)
_USE_CHANGED = (
    "token.id = latest.token_id AND (token.last_used_at IS NULL "
    "OR date_trunc('minute', token.last_used_at, 'UTC') "
    "< date_trunc('minute', latest.created_at, 'UTC') "
    "OR (token.last_used_at < latest.created_at AND token.last_ip IS DISTINCT FROM latest.ip))"
)
_LAST_USE_STAGED = [
    f"SELECT token.id FROM {Token._meta.db_table} AS token, {_LATEST_USE} "  # noqa: S608
    f"WHERE {_USE_CHANGED} ORDER BY token.id FOR UPDATE OF token",
    f"UPDATE {Token._meta.db_table} AS token "  # noqa: S608 (names from models)
    f"SET last_used_at = latest.created_at, last_ip = latest.ip FROM {_LATEST_USE} "
    f"WHERE {_USE_CHANGED}",
]
_FOLD_STAGED = _fold_staged()
# Any number: the key of the advisory lock one fold at a time holds.
_FOLD_LOCK = 0x5357_464F_4C44


def usage_fold():
    """Moves the pending usage into the minute, hour and day rollups and the platform's minutes,
    and returns how many pending rows it took; None if another process is folding right now
    (it takes them). The gateway folds every USAGE_FOLD_SECONDS, and a periodic job folds what
    a process that stopped left behind."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_FOLD_LOCK])
            if not cursor.fetchone()[0]:
                return None
            cursor.execute(_FOLD_STAGED)
            return cursor.fetchone()[0]
        # SQLite: the first INSERT takes the database's one write lock, so no flush can add a
        # pending row before the DELETE.
        for statement in _folds(UsagePending._meta.db_table).values():
            cursor.execute(statement)
        cursor.execute(f"DELETE FROM {UsagePending._meta.db_table}")  # noqa: S608
        return cursor.rowcount


def _record_staged(records, *, with_rows):
    with connection.cursor() as cursor:
        # Dropped at commit; and here, for a second flush within one outer transaction.
        cursor.execute(f"DROP TABLE IF EXISTS {STAGING}")
        cursor.execute(_CREATE_STAGING)
        # psycopg's own errors become Django's (DataError…), as for any query.
        with (
            connection.wrap_database_errors,
            cursor.cursor.copy(f"COPY {STAGING} FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(_STAGED_TYPES)
            for r in records:
                copy.write_row(_staged_row(r))
        if with_rows:
            cursor.execute(_INSERT_STAGED)
        for statement in _ROLLUPS_STAGED:
            cursor.execute(statement)
