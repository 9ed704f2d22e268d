"""Rollups agree with the raw log; time zones neither drop nor double a bucket; retention."""

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from logs import stats
from logs.models import (
    RequestLog,
    UsageHour,
)
from logs.retention import prune
from logs.writer import REFUSED, parts_of, usage_fold, write_batch, write_flush
from tests.logs.test_pages import make_record
from tokens.services import token_create

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def test_the_chart_across_local_midnight_has_every_minute_once(alice, default_line):
    """The last point is the minute in progress, so that requests just made show at once."""
    token = token_create(user=alice, name="t", line=default_line, notify=False)[0]
    midnight = datetime(2026, 6, 1, tzinfo=NEW_YORK).astimezone(UTC)
    records = [
        make_record(alice, token, at=midnight + timedelta(minutes=m)) for m in range(-30, 30)
    ]
    write_batch(records)
    now = midnight + timedelta(minutes=29, seconds=30)
    series = stats.dashboard(alice, 0, NEW_YORK, span=timedelta(hours=1), now=now).series
    assert len(series["labels"]) == 60
    assert sum(series["requests"]) == 60
    assert series["labels"][29:31] == ["23:59", "00:00"]


def test_the_dst_change_neither_drops_nor_doubles_a_bucket(alice, default_line):
    token = token_create(user=alice, name="t", line=default_line, notify=False)[0]
    # 1 November 2026: New York falls back; 01:00–02:00 local happens twice.
    start = datetime(2026, 11, 1, 0, 0, tzinfo=NEW_YORK).astimezone(UTC)
    records = [
        make_record(alice, token, at=start + timedelta(minutes=10 * i), cost=1) for i in range(24)
    ]
    write_batch(records)  # four hours of UTC time, one request every ten minutes
    now = start + timedelta(hours=4)
    # Half a minute earlier: the chart ends with the minute in progress.
    series = stats.dashboard(
        alice, 0, NEW_YORK, span=timedelta(hours=4), now=now - timedelta(seconds=30)
    ).series
    assert len(series["labels"]) == 240  # every UTC minute once
    assert sum(series["requests"]) == 24
    assert series["labels"].count("01:30") == 2  # the repeated local hour shows twice, not merged
    days = stats.daily_spend_by_model(alice, 2, NEW_YORK, now=now)
    assert sum(sum(entry["cost"]) for entry in days["models"]) == 24
    assert days["labels"] == ["Oct 31", "Nov 01"]


def test_spring_forward_keeps_every_hour_of_the_short_day(alice, default_line):
    token = token_create(user=alice, name="t", line=default_line, notify=False)[0]
    start = datetime(2026, 3, 8, 0, 0, tzinfo=NEW_YORK).astimezone(UTC)  # a 23-hour day
    records = [make_record(alice, token, at=start + timedelta(hours=h), cost=10) for h in range(23)]
    write_batch(records)
    now = start + timedelta(hours=23, minutes=30)  # 00:30 on 9 March, local
    days = stats.daily_spend_by_model(alice, 2, NEW_YORK, now=now)
    assert days["labels"] == ["Mar 08", "Mar 09"]
    assert days["models"][0]["cost"] == [230, 0]


def test_retention_removes_old_rows_in_batches(alice, default_line, monkeypatch):
    import logs.retention

    monkeypatch.setattr(logs.retention, "BATCH", 7)
    token = token_create(user=alice, name="t", line=default_line, notify=False)[0]
    now = timezone.now()
    old = now - timedelta(days=settings.LOG_RETENTION_DAYS + 1)
    write_batch([make_record(alice, token, at=old - timedelta(minutes=i)) for i in range(20)])
    write_batch([make_record(alice, token, at=now - timedelta(minutes=i)) for i in range(5)])
    planned = prune(dry_run=True)
    assert planned["request logs"] == 20
    assert RequestLog.objects.count() == 25
    done = prune()
    assert done["request logs"] == 20 and done["IP records"] >= 1
    assert RequestLog.objects.count() == 5
    assert UsageHour.objects.exists()  # kept longer
    assert prune()["request logs"] == 0


@pytest.mark.parametrize("minutes_ago", [5, 30, 59, 61, 90, 600, 3000])
def test_totals_since_any_moment_count_each_request_once(alice, default_line, minutes_ago):
    token = token_create(user=alice, name="t", line=default_line, notify=False)[0]
    now = timezone.now()
    write_batch(
        [
            make_record(alice, token, at=now - timedelta(minutes=m), cost=1)
            for m in range(0, 3600, 7)
        ]
    )
    expected = len(
        [
            m
            for m in range(0, 3600, 7)
            if now - timedelta(minutes=m) >= now - timedelta(minutes=minutes_ago)
        ]
    )
    window = stats.since(
        alice, now - timedelta(minutes=minutes_ago), end=now + timedelta(seconds=1)
    )
    assert window.requests == window.cost == expected


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"model": "gpt-4o-mini\ud800"}, id="text-no-database-encodes"),
        pytest.param(
            {"prompt": 2**31}, id="beyond-32-bit", marks=pytest.mark.postgres
        ),  # SQLite stores any integer
    ],
)
def test_rows_the_database_refuses_are_set_aside_and_the_rest_written(alice, default_line, bad):
    token = token_create(user=alice, name="t", line=default_line, notify=False)[0]
    good = [make_record(alice, token, cost=0) for _ in range(5)]
    refused = [make_record(alice, token, cost=0, **bad) for _ in range(2)]
    batch = [good[0], refused[0], *good[1:4], refused[1], good[4]]
    with pytest.raises(REFUSED):
        write_batch(batch)
    assert RequestLog.objects.count() == 0  # one bad row fails the whole batch

    outcome = write_flush(list(parts_of(batch).values()), owner="gateway-1")
    assert outcome.written == []
    pieces, _error = outcome.refused[alice.pk]
    assert sorted(r.id for p in pieces for r in p.records) == sorted(r.id for r in refused)
    assert sorted(RequestLog.objects.values_list("id", flat=True)) == sorted(r.id for r in good)
    usage_fold()
    assert UsageHour.objects.get().requests == 5


def test_the_dashboard_cards_count_each_window_and_minute(alice, default_line):
    token = token_create(user=alice, name="t", line=default_line, notify=False)[0]
    now = datetime(2026, 6, 10, 15, 30, 20, tzinfo=UTC)  # local midnight was 04:00 UTC
    at = now.replace
    write_batch(
        [
            *[make_record(alice, token, at=at(minute=29, second=10)) for _ in range(3)],
            *[make_record(alice, token, at=at(hour=10, minute=0, second=s)) for s in range(5)],
            make_record(alice, token, at=at(hour=11), status=500),
            make_record(alice, token, at=at(hour=3, minute=59), cost=100),  # yesterday, locally
            make_record(alice, token, at=now - timedelta(days=8), cost=1000),
            make_record(alice, token, at=now - timedelta(days=31), cost=10_000),
        ]
    )
    cards = stats.dashboard(alice, 7, NEW_YORK, span=stats.RANGES["1h"], now=now).cards
    assert (cards.requests_today, cards.spend_today) == (9, 45)
    assert (cards.spend_7d, cards.spend_30d) == (145, 1145)
    assert cards.success_rate == pytest.approx(100 * 8 / 9)
    assert (cards.rpm, cards.tpm, cards.peak_rpm) == (3, 3 * 17, 5)
    assert cards.balance == 7
