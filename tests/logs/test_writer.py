"""The batched writer's rollups, on PostgreSQL (totalled by the database) and SQLite (in Python):
every table agrees with the requests it was given, bucket by bucket."""

import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import close_old_connections, connection, transaction

from logs.models import (
    ChannelMinute,
    IpDay,
    PlatformMinute,
    RequestLog,
    UsageDay,
    UsageHour,
    UsageMinute,
)
from logs.writer import parts_of, usage_fold, write_batch, write_flush
from tests.logs.test_pages import make_record
from tokens.models import Token
from tokens.services import token_create

MIDNIGHT = datetime(2026, 4, 1, tzinfo=UTC)
SUMS = UsageMinute.SUM_FIELDS


def record(user, token=None, *, at, channel=None, logged=True, **fields):
    """A request as the gateway records it; `logged=False`: a refusal counted without a row."""
    entry = make_record(user, token, at=at, **fields)
    entry.channel_id = channel
    entry.logged = logged
    return entry


def expected(records):
    """Each table's rows as the requests make them: UTC minute, hour and date buckets, 0 for
    no token or line, a success below status 400."""
    usage = {name: defaultdict(Counter) for name in ("minute", "hour", "day", "platform")}
    channels, ips = {}, {}
    for r in records:
        minute = r.created_at.astimezone(UTC).replace(second=0, microsecond=0)
        key = (r.user_id, r.token_id or 0, r.line_id or 0, r.model, r.status < 400)
        sums = {
            "requests": 1,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "cost": r.cost,
            "latency_ms": r.latency_ms,
            "cache_read_tokens": r.cache_read_tokens,
            "cache_write_tokens": r.cache_write_5m_tokens + r.cache_write_1h_tokens,
        }
        usage["minute"][(minute, *key)].update(sums)
        usage["hour"][(minute.replace(minute=0), *key)].update(sums)
        usage["day"][(minute.date(), *key)].update(sums)
        usage["platform"][(minute, r.model, r.status < 400)].update(sums)
        if r.channel_id:
            totals = channels.setdefault((minute, r.channel_id), [0, 0, 0])
            totals[0] += 1
            totals[1] += r.status >= 400
            totals[2] += r.latency_ms
        if r.client_ip:
            seen = ips.setdefault((minute.date(), r.user_id, r.token_id or 0, r.client_ip), [])
            seen.append(r.created_at)
    return {
        **usage,
        "channel": {key: tuple(totals) for key, totals in channels.items()},
        "ip": {key: (len(seen), min(seen), max(seen)) for key, seen in ips.items()},
    }


def stored():
    def usage(model):
        return {
            tuple(getattr(row, f) for f in model.KEY_FIELDS): Counter(
                {f: getattr(row, f) for f in SUMS}
            )
            for row in model.objects.all()
        }

    return {
        "minute": usage(UsageMinute),
        "hour": usage(UsageHour),
        "day": usage(UsageDay),
        "platform": usage(PlatformMinute),
        "channel": {
            (row.bucket, row.channel_id): (row.requests, row.failures, row.latency_ms)
            for row in ChannelMinute.objects.all()
        },
        "ip": {
            (row.day, row.user_id, row.token_id, row.client_ip): (
                row.requests,
                row.first_seen,
                row.last_seen,
            )
            for row in IpDay.objects.all()
        },
    }


@pytest.fixture
def tokens(alice, default_line):
    return [
        token_create(user=alice, name=f"t{n}", line=default_line, notify=False)[0] for n in range(2)
    ]


def test_a_request_a_tenth_of_a_second_before_midnight_counts_in_its_own_day(alice, tokens):
    last = MIDNIGHT - timedelta(milliseconds=100)
    batch = [record(alice, tokens[0], at=last), record(alice, tokens[0], at=MIDNIGHT)]
    write_batch(batch)
    minutes = sorted(UsageMinute.objects.values_list("bucket", "requests"))
    assert minutes == [(MIDNIGHT - timedelta(minutes=1), 1), (MIDNIGHT, 1)]
    hours = sorted(UsageHour.objects.values_list("bucket", "requests"))
    assert hours == [(MIDNIGHT - timedelta(hours=1), 1), (MIDNIGHT, 1)]
    days = sorted(UsageDay.objects.values_list("bucket", "requests"))
    assert days == [(last.date(), 1), (MIDNIGHT.date(), 1)]
    assert sorted(IpDay.objects.values_list("day", "first_seen")) == [
        (last.date(), last),
        (MIDNIGHT.date(), MIDNIGHT),
    ]
    assert stored() == expected(batch)


def test_a_request_with_no_token_or_line_is_totalled_under_0(alice):
    write_batch([record(alice, at=MIDNIGHT, channel=3)])
    row = UsageMinute.objects.get()
    assert (row.token_id, row.line_id, row.requests) == (0, 0, 1)
    assert UsageDay.objects.get().token_id == 0
    assert IpDay.objects.get().token_id == 0


def test_a_refused_request_left_out_of_the_log_still_counts(alice, tokens):
    refused = record(alice, tokens[0], at=MIDNIGHT, status=429, cost=0, logged=False, channel=2)
    answered = record(alice, tokens[0], at=MIDNIGHT + timedelta(seconds=1), channel=2)
    write_batch([refused, answered])
    assert list(RequestLog.objects.values_list("id", flat=True)) == [answered.id]
    assert sorted(UsageMinute.objects.values_list("ok", "requests")) == [(False, 1), (True, 1)]
    assert ChannelMinute.objects.get().failures == 1
    assert IpDay.objects.get().requests == 2
    assert stored() == expected([refused, answered])


def test_an_address_keeps_its_first_and_last_sighting_of_the_day(alice, tokens):
    at = [MIDNIGHT + timedelta(hours=h) for h in range(5)]
    write_batch([record(alice, tokens[0], at=at[2]), record(alice, tokens[0], at=at[3])])
    write_batch([record(alice, tokens[0], at=at[4]), record(alice, tokens[0], at=at[0])])
    write_batch([record(alice, tokens[0], at=at[1])])
    row = IpDay.objects.get()
    assert (row.requests, row.first_seen, row.last_seen) == (5, at[0], at[4])
    write_batch([record(alice, tokens[0], at=at[1], ip="2001:db8::1")])
    assert IpDay.objects.count() == 2


def test_a_channel_minute_counts_requests_failures_and_latency(alice, tokens):
    batch = [
        record(alice, tokens[0], at=MIDNIGHT, channel=7),
        record(alice, tokens[1], at=MIDNIGHT + timedelta(seconds=30), channel=7, status=502),
        record(alice, tokens[1], at=MIDNIGHT + timedelta(seconds=59), channel=8, status=500),
        record(alice, tokens[1], at=MIDNIGHT + timedelta(seconds=60), channel=7, status=504),
        record(alice, tokens[1], at=MIDNIGHT, channel=None),
    ]
    write_batch(batch)
    rows = ChannelMinute.objects.order_by("bucket", "channel_id")
    assert [(r.bucket - MIDNIGHT, r.channel_id, r.requests, r.failures) for r in rows] == [
        (timedelta(0), 7, 2, 1),
        (timedelta(0), 8, 1, 1),
        (timedelta(minutes=1), 7, 1, 1),
    ]
    assert rows[0].latency_ms == 2 * batch[0].latency_ms


def test_two_batches_add_up(alice, bob, tokens):
    first = [record(alice, tokens[0], at=MIDNIGHT + timedelta(seconds=s), cost=s) for s in range(5)]
    second = [
        *(record(alice, tokens[0], at=MIDNIGHT + timedelta(seconds=s), cost=7) for s in range(3)),
        record(bob, at=MIDNIGHT, cost=11),
    ]
    write_batch(first)
    write_batch(second)
    mine = UsageMinute.objects.get(user_id=alice.pk)
    assert (mine.requests, mine.cost) == (8, 10 + 21)
    assert stored() == expected(first + second)


def test_every_table_agrees_with_the_requests_across_minutes_hours_and_days(alice, bob, tokens):
    """A mixed workload over two days, in three batches: every bucket of every table."""
    records = []
    for i in range(120):
        at = MIDNIGHT - timedelta(hours=2) + timedelta(seconds=97 * i, microseconds=i)
        user, token = (alice, tokens[i % 2]) if i % 3 else (bob, None)
        entry = record(
            user,
            token,
            at=at,
            model=("gpt-4o-mini", "gpt-4o", "claude-sonnet-4")[i % 3],
            status=(200, 200, 200, 200, 502, 429)[i % 6],
            ip=(None, "203.0.113.5", "198.51.100.7", "2001:db8::5")[i % 4],
            prompt=i * 11,
            completion=i * 3,
            cost=i * 17,
            channel=(None, 1, 2)[i % 3],
            logged=i % 10 != 7,
        )
        entry.cache_read_tokens, entry.cache_write_5m_tokens = i, i % 5
        entry.cache_write_1h_tokens, entry.latency_ms = i % 2, 100 + i
        if i % 9 == 0:
            entry.line_id = None
        records.append(entry)
    for start in range(0, 120, 40):
        write_batch(records[start : start + 40])
    assert stored() == expected(records)
    assert RequestLog.objects.count() == len([r for r in records if r.logged])


def test_a_token_keeps_its_latest_use(alice, tokens):
    later = MIDNIGHT + timedelta(minutes=5)
    write_batch(
        [
            record(alice, tokens[0], at=MIDNIGHT, ip="203.0.113.1"),
            record(alice, tokens[0], at=later, ip="203.0.113.2"),
            record(alice, tokens[1], at=MIDNIGHT, ip=None),
        ]
    )
    write_batch([record(alice, tokens[0], at=MIDNIGHT + timedelta(minutes=1), ip="203.0.113.3")])
    uses = dict(Token.objects.values_list("pk", "last_used_at"))
    assert uses == {tokens[0].pk: later, tokens[1].pk: MIDNIGHT}
    ips = dict(Token.objects.values_list("pk", "last_ip"))
    assert ips == {tokens[0].pk: "203.0.113.2", tokens[1].pk: None}


def test_every_multiplier_is_stored_as_it_was_charged(alice):
    """On PostgreSQL the multipliers travel to the log as text: each comes back to the digit."""
    entry = record(alice, at=MIDNIGHT, mm="123456.123456", cm="0.000001", gm="1")
    entry.cache_read_multiplier, entry.cache_write_5m_multiplier = Decimal("0.1"), 0
    entry.cache_write_1h_multiplier, entry.audio_input_multiplier = Decimal("2.5E+1"), Decimal(3)
    entry.audio_output_multiplier = Decimal("0.0750")
    write_batch([entry])
    row = RequestLog.objects.values(*(f"{part}_multiplier" for part in MULTIPLIED)).get()
    assert row == {
        "model_multiplier": Decimal("123456.123456"),
        "completion_multiplier": Decimal("0.000001"),
        "line_multiplier": Decimal(1),
        "cache_read_multiplier": Decimal("0.1"),
        "cache_write_5m_multiplier": Decimal(0),
        "cache_write_1h_multiplier": Decimal(25),
        "audio_input_multiplier": Decimal(3),
        "audio_output_multiplier": Decimal("0.075"),
    }


MULTIPLIED = [
    "model",
    "completion",
    "line",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "audio_input",
    "audio_output",
]


def test_a_tokens_last_use_is_kept_to_the_minute(alice, tokens):
    """A busy token's row is written once a minute, or when its address changes: not by every
    flush."""
    token = tokens[0]

    def last_use():
        token.refresh_from_db()
        return token.last_used_at, token.last_ip

    write_batch([record(alice, token, at=MIDNIGHT + timedelta(seconds=10), ip="203.0.113.1")])
    write_batch([record(alice, token, at=MIDNIGHT + timedelta(seconds=50), ip="203.0.113.1")])
    assert last_use() == (MIDNIGHT + timedelta(seconds=10), "203.0.113.1")  # the same minute
    write_batch([record(alice, token, at=MIDNIGHT + timedelta(seconds=55), ip="203.0.113.2")])
    assert last_use() == (MIDNIGHT + timedelta(seconds=55), "203.0.113.2")  # another address
    later = MIDNIGHT + timedelta(seconds=61)
    write_batch([record(alice, token, at=later, ip="203.0.113.2")])
    assert last_use() == (later, "203.0.113.2")  # the next minute


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_flushes_wait_for_each_other_rather_than_deadlock(alice):
    """A flush takes its rows of the IP totals in key order. The first flush holds the first
    key's rows and, once the second waits for them, takes the other keys'. The second, wanting
    every key, must not hold any of them meanwhile: a deadlock would fail one of the two."""
    users = list(range(alice.pk, alice.pk + 20))

    def batch(ids):
        """One request per user, each under a model of its own, so that every rollup's key
        order is the users' order."""
        entries = [record(alice, at=MIDNIGHT, model=f"model-{n:06}", cost=1) for n in ids]
        for entry, user_id in zip(entries, ids, strict=True):
            entry.user_id = user_id
        return entries

    first_key, others = batch(users[:1]), batch(users[1:])
    every = batch(users[::-1])
    holding, go_on, failures = threading.Event(), threading.Event(), []

    def first():
        try:
            with transaction.atomic():
                write_batch(first_key)
                holding.set()
                go_on.wait(10)
                write_batch(others)
        except Exception as error:
            failures.append(error)
        finally:
            close_old_connections()

    def second():
        holding.wait(10)
        try:
            write_batch(every)
        except Exception as error:
            failures.append(error)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    holding.wait(10)
    _wait_for_a_lock_wait()
    go_on.set()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert sorted(UsageMinute.objects.values_list("user_id", "requests")) == [
        (user_id, 2) for user_id in users
    ]


def _wait_for_a_lock_wait():
    """Until a session of this database waits for a row another one holds."""
    deadline = time.monotonic() + 10
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("the second flush never waited for the first")


def test_a_number_beyond_64_bits_is_set_aside_with_its_row_alone(alice, tokens):
    """Refused before it reaches the database (psycopg and sqlite3 cannot send it), as the
    database would refuse it: the flush goes on without it."""
    good = [record(alice, tokens[0], at=MIDNIGHT, cost=0) for _ in range(3)]
    huge = record(alice, tokens[0], at=MIDNIGHT, cost=0)
    huge.latency_ms = 2**63
    outcome = write_flush(list(parts_of([good[0], huge, *good[1:]]).values()), owner="gateway-1")
    pieces, _error = outcome.refused[alice.pk]
    assert [r.id for piece in pieces for r in piece.records] == [huge.id]
    assert sorted(RequestLog.objects.values_list("id", flat=True)) == sorted(r.id for r in good)
    usage_fold()
    assert UsageMinute.objects.get().requests == 3
