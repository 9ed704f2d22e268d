"""The spend per day of a viewer whose days are UTC days comes from the day rollup, and adds up
to what the request log holds as the hours do for any other viewer: in UTC across a month's
end, and in London in winter, and across its clock change, where the hours are read."""

import zoneinfo
from datetime import UTC, datetime

import pytest

from logs import stats
from tests.logs.test_dashboard_read import _expected, _figures, busy  # noqa: F401

MOMENTS = [
    # 00:25 on 2 December: the week and the month reach back over November's end.
    pytest.param("UTC", datetime(2026, 12, 2, 0, 25, tzinfo=UTC), id="utc"),
    pytest.param("Europe/London", datetime(2026, 12, 20, 23, 50, tzinfo=UTC), id="london-winter"),
    # Summer time ended on 25 October: the days before began at 23:00 UTC.
    pytest.param("Europe/London", datetime(2026, 10, 28, 9, 5, tzinfo=UTC), id="london-dst"),
]


@pytest.mark.parametrize(("zone", "now"), MOMENTS)
@pytest.mark.parametrize("days", [7, 30])
def test_the_spend_per_day_adds_up_what_the_request_log_holds(alice, busy, zone, now, days):  # noqa: F811
    busy(now)
    tz = zoneinfo.ZoneInfo(zone)
    span = stats.RANGES["6h"]
    board = stats.dashboard(alice, 0, tz, span=span, days=days, now=now)
    expected = _expected(alice, now, tz, span=span, days=days)
    assert sum(expected["spend_errors"]) > 0
    assert _figures(board) == expected


def test_a_utc_days_spend_is_filtered_by_token(alice, busy):  # noqa: F811
    now = datetime(2026, 12, 2, 0, 25, tzinfo=UTC)
    _backend, batch = busy(now)
    tz = zoneinfo.ZoneInfo("UTC")
    span = stats.RANGES["1h"]
    board = stats.dashboard(alice, 0, tz, span=span, days=7, now=now, token_id=batch.pk)
    assert _figures(board) == _expected(alice, now, tz, span=span, days=7, token_id=batch.pk)


def test_a_utc_viewers_spend_per_day_reads_days_not_hours(alice, busy, django_assert_num_queries):  # noqa: F811
    now = datetime(2026, 12, 2, 0, 25, tzinfo=UTC)
    busy(now)
    with django_assert_num_queries(1) as queries:
        spend = stats.daily_spend_by_model(alice, 30, zoneinfo.ZoneInfo("UTC"), now=now)
    assert spend["models"]
    sql = queries.captured_queries[0]["sql"]
    assert "logs_usageday" in sql and "logs_usagehour" not in sql
