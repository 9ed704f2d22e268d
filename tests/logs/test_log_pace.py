"""The request log shows the requests and tokens per minute of what its filters select, read
from the rollups."""

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from logs.writer import write_batch
from tests.logs.test_pages import make_record
from tokens.services import token_create


@pytest.fixture
def traffic(alice, default_line, model_price):
    """Two tokens; in the last whole minute, 3 requests of `backend` (one failed) and 2 of
    `batch`; earlier, one more of each; another model on `batch`."""
    backend = token_create(user=alice, name="backend", line=default_line, notify=False)[0]
    batch = token_create(user=alice, name="batch", line=default_line, notify=False)[0]
    last_minute = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
    at = last_minute + timedelta(seconds=30)
    write_batch(
        [
            make_record(alice, backend, at=at, prompt=100, completion=10),
            make_record(alice, backend, at=at, prompt=100, completion=10),
            make_record(alice, backend, at=at, status=502, prompt=0, completion=0, cost=0),
            make_record(alice, batch, at=at, prompt=1000, completion=0),
            make_record(alice, batch, at=at, prompt=1000, completion=0, model="o3-mini"),
            make_record(alice, backend, at=at - timedelta(minutes=20), prompt=5, completion=5),
            make_record(alice, batch, at=at - timedelta(minutes=20), prompt=5, completion=5),
        ]
    )
    return backend, batch


def page(client, **filters):
    return client.get(reverse("logs:list"), {"period": "1h", **filters})


def figures(response):
    return response.context["pace"]


def test_the_log_shows_the_pace_of_everything_selected(alice_client, traffic):
    pace = figures(page(alice_client))
    assert (pace.last_rpm, pace.last_tpm) == (5, 2220)
    assert (pace.requests, pace.peak_rpm, pace.errors) == (7, 5, 1)
    html = page(alice_client).content.decode()
    assert "5 <small>RPM</small> · 2,220 <small>TPM</small>" in html
    assert 'id="rpm-data"' in html


@pytest.mark.parametrize(
    ("filters", "rpm", "tpm", "requests"),
    [
        ({"token": "backend"}, 3, 220, 4),
        ({"token": "batch"}, 2, 2000, 3),
        ({"model": "gpt-4o-mini"}, 4, 1220, 6),
        ({"status": "error"}, 1, 0, 1),
        ({"status": "ok"}, 4, 2220, 6),
        ({"line": "default"}, 5, 2220, 7),
    ],
)
def test_the_pace_follows_the_filters(alice_client, traffic, filters, rpm, tpm, requests):
    backend, batch = traffic
    if "token" in filters:
        filters["token"] = {"backend": backend, "batch": batch}[filters["token"]].pk
    pace = figures(page(alice_client, **filters))
    assert (pace.last_rpm, pace.last_tpm, pace.requests) == (rpm, tpm, requests)
    chart = json.loads(
        page(alice_client, **filters)
        .content.decode()
        .split('id="rpm-data" type="application/json">')[1]
        .split("</script>")[0]
    )
    assert sum(chart["requests"]) == requests


def test_over_a_week_the_pace_is_totals_and_averages(alice_client, traffic):
    pace = figures(alice_client.get(reverse("logs:list"), {"period": "7d"}))
    assert pace.series is None and pace.peak_rpm is None
    assert (pace.requests, pace.last_rpm) == (7, 5)
    assert pace.minutes == 7 * 24 * 60
    html = alice_client.get(reverse("logs:list"), {"period": "7d"}).content.decode()
    assert "pick a day or less to see every minute" in html


def test_an_ip_filter_says_the_pace_is_not_kept_per_address(alice_client, traffic):
    response = page(alice_client, ip="203.0.113.5")
    assert figures(response) is None
    assert "not per IP address" in response.content.decode()


def test_a_past_range_has_no_last_minute(alice_client, alice, traffic):
    alice.time_zone = "UTC"
    alice.save()
    end = timezone.now() - timedelta(minutes=10)
    pace = figures(
        alice_client.get(
            reverse("logs:list"),
            {
                "period": "custom",
                "start": f"{end - timedelta(hours=1):%Y-%m-%dT%H:%M}",
                "end": f"{end:%Y-%m-%dT%H:%M}",
            },
        )
    )
    assert pace.last_rpm is None
    assert pace.requests == 2


def test_the_figures_refresh_as_a_fragment(alice_client, traffic):
    response = alice_client.get(
        reverse("logs:list"), {"period": "1h", "part": "figures"}, headers={"HX-Request": "true"}
    )
    html = response.content.decode().strip()
    assert html.startswith('<div id="live"') and "<table" not in html
    assert "5 <small>RPM</small>" in html


def test_another_users_pace_is_not_shown(bob_client, bob, default_line, traffic):
    token_create(user=bob, name="mine", line=default_line, notify=False)
    pace = figures(page(bob_client))
    assert (pace.requests, pace.last_rpm) == (0, 0)


def test_the_pace_reads_the_rollups_not_the_log(
    alice_client, traffic, django_assert_max_num_queries
):
    # The session, the user, the filter choices (tokens, lines, models), the pace, the page
    # of rows, the tokens: a fixed number, whatever the size of the log.
    with django_assert_max_num_queries(12):
        page(alice_client)
