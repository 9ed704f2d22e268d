"""The dashboard reads its cards, its per-minute chart and its spend in one query over the
rollups, and those figures are what the request log itself adds up to: across local midnight,
a month's end, a clock change and a half-hour time zone."""

import re
import zoneinfo
from collections import Counter, defaultdict
from datetime import UTC, datetime, time, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.models import ModelPrice
from logs import stats
from logs.models import RequestLog
from logs.writer import write_batch
from tests.logs.test_pages import make_record
from tokens.services import token_create

MODELS = ("gpt-4o-mini", "o3-mini", "claude-sonnet-4")
ROLLUPS = re.compile(r"logs_usage(minute|hour)")


@pytest.fixture
def busy(alice, default_line):
    """A month of requests every 37 minutes and a few seconds, some failed, some read from a
    vendor's cache, over two tokens and three models; and a busy last hour."""
    backend = token_create(user=alice, name="backend", line=default_line, notify=False)[0]
    batch = token_create(user=alice, name="batch", line=default_line, notify=False)[0]

    def batch_of(now):
        records = []
        moment, n = now - timedelta(days=33), 0
        while moment < now:
            records.append(_record(alice, (backend, batch)[n % 2], moment, n))
            moment += timedelta(minutes=37, seconds=11 + n % 13)
            n += 1
        # The last hour: up to 9 requests a minute, the minute before now among them.
        for minute in range(1, 60):
            at = now.replace(second=0) - timedelta(minutes=minute)
            for i in range(minute * 7 % 10):
                records.append(
                    _record(alice, (backend, batch)[i % 2], at + timedelta(seconds=i), i)
                )
        write_batch(records)
        return backend, batch

    return batch_of


def _record(user, token, at, n):
    failed = n % 9 == 4
    record = make_record(
        user,
        token,
        at=at,
        model=MODELS[n % 3],
        status=502 if failed else 200,
        prompt=0 if failed else 100 + n % 50,
        completion=0 if failed else 10 + n % 7,
        cost=0 if failed else 1_000 + n,
    )
    record.cache_read_tokens = 0 if failed or n % 4 else 40
    return record


def _local_midnight(now, tz):
    return datetime.combine(now.astimezone(tz).date(), time(), tzinfo=tz).astimezone(UTC)


def _expected(user, now, tz, *, span, days, token_id=None, model_name=None):
    """The dashboard's figures added up from the request log's rows, not from a rollup."""
    rows = RequestLog.objects.filter(user_id=user.pk)
    if token_id:
        rows = rows.filter(token_id=token_id)
    if model_name:
        rows = rows.filter(model=model_name)
    rows = list(rows.values("created_at", "model", "status", "prompt_tokens",
                            "completion_tokens", "cost", "cache_read_tokens"))  # fmt: skip
    midnight = _local_midnight(now, tz)
    minute_now = now.replace(second=0, microsecond=0)

    def between(start, end):
        return [r for r in rows if start <= r["created_at"] < end]

    today = between(midnight, now)
    last = between(minute_now - timedelta(minutes=1), minute_now)
    per_minute = Counter(r["created_at"].replace(second=0, microsecond=0) for r in today)
    prompt = sum(r["prompt_tokens"] for r in today)
    end = minute_now + timedelta(minutes=1)
    chart = between(end - span, end)
    minutes = [end - span + timedelta(minutes=i) for i in range(int(span.total_seconds() // 60))]

    def in_minute(moment):
        return [r for r in chart if r["created_at"].replace(second=0, microsecond=0) == moment]

    # An hour counts in the local day it begins in.
    first_day = now.astimezone(tz).date() - timedelta(days=days - 1)
    day_list = [first_day + timedelta(days=i) for i in range(days)]
    spend, errors = defaultdict(lambda: defaultdict(int)), defaultdict(int)
    for r in rows:
        hour = r["created_at"].replace(minute=0, second=0, microsecond=0)
        if hour >= _local_midnight(datetime.combine(first_day, time(12), tzinfo=tz), tz):
            day = hour.astimezone(tz).date()
            spend[r["model"]][day] += r["cost"]
            errors[day] += r["status"] >= 400
    return {
        "spend_today": sum(r["cost"] for r in today),
        "spend_7d": sum(r["cost"] for r in between(now - timedelta(days=7), now)),
        "spend_30d": sum(r["cost"] for r in between(now - timedelta(days=30), now)),
        "requests_today": len(today),
        "success_rate": 100 * sum(r["status"] < 400 for r in today) / len(today),
        "tokens_today": sum(r["prompt_tokens"] + r["completion_tokens"] for r in today),
        "cached_share_today": (
            100 * sum(r["cache_read_tokens"] for r in today) / prompt if prompt else None
        ),
        "rpm": len(last),
        "tpm": sum(r["prompt_tokens"] + r["completion_tokens"] for r in last),
        "peak_rpm": max(per_minute.values(), default=0),
        "series": {
            "requests": [len(in_minute(m)) for m in minutes],
            "errors": [sum(r["status"] >= 400 for r in in_minute(m)) for m in minutes],
            "tokens": [
                sum(r["prompt_tokens"] + r["completion_tokens"] for r in in_minute(m))
                for m in minutes
            ],
        },
        "spend": {
            model: [costs.get(day, 0) for day in day_list]
            for model, costs in spend.items()
            if sum(costs.values())
        },
        "spend_errors": [errors[day] for day in day_list],
    }


def _figures(board):
    card = board.cards
    return {
        "spend_today": card.spend_today,
        "spend_7d": card.spend_7d,
        "spend_30d": card.spend_30d,
        "requests_today": card.requests_today,
        "success_rate": card.success_rate,
        "tokens_today": card.tokens_today,
        "cached_share_today": card.cached_share_today,
        "rpm": card.rpm,
        "tpm": card.tpm,
        "peak_rpm": card.peak_rpm,
        "series": {key: board.series[key] for key in ("requests", "errors", "tokens")},
        "spend": {entry["model"]: entry["cost"] for entry in board.spend["models"]},
        "spend_errors": board.spend["errors"],
    }


MOMENTS = [
    # 14:20 in New York on 2 November 2026: the week before holds October's end and the
    # 25-hour day the clocks went back.
    pytest.param("America/New_York", datetime(2026, 11, 2, 19, 20, tzinfo=UTC), id="new-york"),
    # 17:40 in Kolkata on 1 March 2026: local days begin at half past an hour, UTC.
    pytest.param("Asia/Kolkata", datetime(2026, 3, 1, 12, 10, tzinfo=UTC), id="kolkata"),
]


@pytest.mark.parametrize(("zone", "now"), MOMENTS)
@pytest.mark.parametrize("days", [7, 30])
def test_the_dashboard_adds_up_what_the_request_log_holds(alice, busy, zone, now, days):
    busy(now)
    tz = zoneinfo.ZoneInfo(zone)
    span = stats.RANGES["24h"]
    board = stats.dashboard(alice, 0, tz, span=span, days=days, now=now)
    expected = _expected(alice, now, tz, span=span, days=days)
    assert expected["requests_today"] > 20 and expected["peak_rpm"] == 9
    assert _figures(board) == expected


@pytest.mark.parametrize(("zone", "now"), MOMENTS)
def test_the_filtered_dashboard_adds_up_the_tokens_and_models_rows(alice, busy, zone, now):
    backend, batch = busy(now)
    tz = zoneinfo.ZoneInfo(zone)
    span = stats.RANGES["6h"]
    for filters in ({"token_id": batch.pk}, {"model_name": "o3-mini"},
                    {"token_id": backend.pk, "model_name": "gpt-4o-mini"}):  # fmt: skip
        board = stats.dashboard(alice, 0, tz, span=span, days=7, now=now, **filters)
        assert _figures(board) == _expected(alice, now, tz, span=span, days=7, **filters)


@pytest.mark.parametrize(("zone", "now"), MOMENTS)
def test_totals_over_days_agree_with_the_request_log(alice, busy, zone, now):
    """The token page's 30 days, whole UTC days from the day rollup and the edges finer."""
    backend, _batch = busy(now)
    start = now - timedelta(days=30, minutes=17)
    totals = stats.since(alice, start, end=now, token_id=backend.pk)
    rows = RequestLog.objects.filter(
        user_id=alice.pk, token_id=backend.pk, created_at__gte=start, created_at__lt=now
    )
    assert (totals.requests, totals.cost) == (rows.count(), sum(r.cost for r in rows))


def _rollup_queries(queries):
    return [q["sql"] for q in queries if ROLLUPS.search(q["sql"])]


def test_the_page_reads_cards_chart_and_spend_in_one_query(
    alice_client, alice, busy, django_assert_max_num_queries
):
    busy(timezone.now())
    alice_client.get(reverse("console:dashboard"))  # the session, once
    # The session, the user, the account, the rollups (with the models to filter by), the
    # tokens, the announcements with the header's unread count; and the header's balance.
    with (
        django_assert_max_num_queries(7),
        CaptureQueriesContext(connection) as queries,
    ):
        response = alice_client.get(reverse("console:dashboard"), {"days": "30d"})
    assert response.context["cards"].requests_today > 0
    assert len(_rollup_queries(queries.captured_queries)) == 1


def test_the_live_refresh_reads_the_same_figures_the_same_way(
    alice_client, alice, busy, django_assert_max_num_queries
):
    backend, _batch = busy(timezone.now())
    page = alice_client.get(reverse("console:dashboard"), {"range": "24h", "token": backend.pk})
    # The session, the user, the account, the rollups, the token; and the header's balance.
    with (
        django_assert_max_num_queries(6),
        CaptureQueriesContext(connection) as queries,
    ):
        live = alice_client.get(
            reverse("console:dashboard_live"),
            {"range": "24h", "token": backend.pk},
            headers={"HX-Request": "true"},
        )
    assert len(_rollup_queries(queries.captured_queries)) == 1
    assert live.context["cards"] == page.context["cards"]
    assert live.context["series"]["requests"] == page.context["series"]["requests"]
    assert live.context["filtered_token"].name == "backend"


def test_an_account_whose_requests_are_older_than_a_month_skips_the_first_steps(
    alice_client, alice, default_line
):
    token = token_create(user=alice, name="old", line=default_line, notify=False)[0]
    write_batch([make_record(alice, token, at=timezone.now() - timedelta(days=45))])
    html = alice_client.get(reverse("console:dashboard")).content.decode()
    assert "Get started in three steps" not in html


def test_a_new_account_sees_the_first_steps_with_the_cheapest_chat_model(alice_client, db):
    ModelPrice.objects.create(model="thrifty-chat", vendor="Acme", model_multiplier="0.01")
    html = alice_client.get(reverse("console:dashboard")).content.decode()
    assert "Get started in three steps" in html
    assert "thrifty-chat" in html
