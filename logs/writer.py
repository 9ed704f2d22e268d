"""The batched log writer: request rows, rollups and the money they cost, per flush.

The gateway adds a RequestRecord per request (in memory, and in its journal). Once a second it
hands what it gathered, with the lease money it gives back (billing.holds), to `write_flush`,
which runs in a database thread and writes, in one transaction:

- the money, by billing alone: per account, billing.settlement.usage_settle charges what the
  rows cost (balance, hold, token quotas, one usage ledger row) and releases the lease money
  given back;
- the log rows, in one COPY (PostgreSQL) or multi-row INSERT;
- per-minute, per-hour and per-day usage rollups, IP-per-day and channel-per-minute totals,
  each as one INSERT … ON CONFLICT DO UPDATE that adds to the existing totals;
- the tokens' last use.

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

from billing.holds import holds_of
from billing.ledger import BillingError
from billing.settlement import Usage, unsettled_cleared, unsettled_record, usage_settle
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
# cannot encode, a CHECK), as opposed to being unreachable; and a settlement billing refuses,
# which only that account's rows wait on.
REFUSED = (DataError, IntegrityError, ValueError, UnicodeError, BillingError)

RECORD_FIELDS = [f.name for f in fields(RequestRecord) if f.name not in {"quota_hold", "logged"}]
_as_row = operator.attrgetter(*RECORD_FIELDS)


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
            for part in sorted(parts, key=lambda p: p.user_id):
                _settle(part, part.records, owner, outcome, release_all=release_all)
            records = [r for part in parts for r in part.records]
            _insert(records)
            _rollups(records)
            _last_use(records)
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
            _settle(part, new, owner, outcome, release_all=release_all)
            _rollups(new)
            _last_use(new)
    except REFUSED as error:
        return _describe(error)
    return None


def _describe(error):
    return " ".join(str(error).split())[:500]


def _settle(part, new_records, owner, outcome, release_all=False):
    lost = usage_settle(owner=owner, usage=part.usage(new_records), release_all=release_all)
    if lost.account:
        outcome.lost_users.append(part.user_id)
    outcome.lost_tokens += lost.tokens


def write_batch(records):
    """Log rows and their rollups alone, in one transaction, for rows whose money is settled
    elsewhere or not at all (imported history, test fixtures)."""
    with transaction.atomic():
        _insert(records)
        _rollups(records)
        _last_use(records)


def _insert(records):
    rows = [_as_row(r) for r in records if r.logged]
    if not rows:
        return
    if connection.vendor == "postgresql":
        _copy(RequestLog, RECORD_FIELDS, rows)
    else:
        _insert_rows(RequestLog, RECORD_FIELDS, rows)


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
    minutes, hours, days = defaultdict(_zeros), defaultdict(_zeros), defaultdict(_zeros)
    platform = defaultdict(_zeros)
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
    return [0] * len(UsageMinute.SUM_FIELDS)


def _last_use(records):
    """Each token's last request time and address: what the log knows of a token. Its quota
    counters are money, and billing's (billing.settlement.usage_settle)."""
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
    """INSERT … ON CONFLICT (key) DO UPDATE SET `updates`, rows sorted by key so that the
    flushes of several processes lock rows in the same order. On PostgreSQL the rows go in by
    COPY to a temporary table first: no SQL text to build or parse per value."""
    quote = connection.ops.quote_name
    keys = ", ".join(quote(c.column) for c in _columns(model, key_names))
    conflict = f" ON CONFLICT ({keys}) DO UPDATE SET {updates}"
    rows.sort()
    if connection.vendor != "postgresql":
        _insert_rows(model, names, rows, conflict)
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
