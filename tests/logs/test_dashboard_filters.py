"""The dashboard's token and model filters: the cards follow them as the charts do, and filter
lists and chart series hold real models only."""

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import ModelPrice
from logs import stats
from logs.writer import write_batch
from tests.logs.test_pages import make_record
from tokens.services import token_create


@pytest.fixture
def two_tokens(alice, default_line, model_price):
    backend = token_create(user=alice, name="backend", line=default_line, notify=False)[0]
    batch = token_create(user=alice, name="batch", line=default_line, notify=False)[0]
    at = timezone.now().replace(second=0, microsecond=0) - timedelta(seconds=30)
    write_batch(
        [make_record(alice, backend, at=at, cost=1_000_000) for _ in range(3)]
        + [make_record(alice, batch, at=at, cost=2_000_000, model="o3-mini") for _ in range(5)]
    )
    return backend, batch


def cards(client, **filters):
    return client.get(reverse("console:dashboard"), filters).context["cards"]


def test_the_cards_cover_the_whole_account_without_a_filter(alice_client, two_tokens):
    card = cards(alice_client)
    assert (card.requests_today, card.rpm, card.spend_today) == (8, 8, 13_000_000)


def test_the_cards_follow_the_token_filter(alice_client, two_tokens):
    backend, _batch = two_tokens
    card = cards(alice_client, token=backend.pk)
    assert (card.requests_today, card.rpm, card.peak_rpm) == (3, 3, 3)
    assert (card.spend_today, card.spend_7d, card.tpm) == (3_000_000, 3_000_000, 51)


def test_the_cards_follow_the_model_filter(alice_client, two_tokens):
    card = cards(alice_client, model="o3-mini")
    assert (card.requests_today, card.rpm, card.spend_30d) == (5, 5, 10_000_000)


def test_the_balance_stays_the_accounts_and_the_page_says_so(alice_client, two_tokens):
    _backend, batch = two_tokens
    html = alice_client.get(reverse("console:dashboard"), {"token": batch.pk}).content.decode()
    assert "Spend, requests and pace of the token <strong>batch</strong> only" in html
    assert "the balance is the whole account" in html


def test_the_live_refresh_keeps_the_filter(alice_client, two_tokens):
    backend, _batch = two_tokens
    live = alice_client.get(
        reverse("console:dashboard_live"), {"token": backend.pk}, headers={"HX-Request": "true"}
    )
    assert live.context["cards"].requests_today == 3


def test_another_users_token_shows_nothing(bob_client, two_tokens):
    backend, _batch = two_tokens
    card = cards(bob_client, token=backend.pk)
    assert (card.requests_today, card.spend_today) == (0, 0)


@pytest.fixture
def junk(alice, default_line, model_price):
    """Real traffic, and what clients mistype: a model that does not exist, an empty name."""
    token = token_create(user=alice, name="backend", line=default_line, notify=False)[0]
    now = timezone.now()
    fail = {"status": 404, "cost": 0, "prompt": 0, "completion": 0}
    write_batch(
        [
            make_record(alice, token, at=now, cost=1_000),
            make_record(alice, token, at=now, model="gpt-5-nonexistent", **fail),
            make_record(alice, token, at=now, model="no-such-model", **fail),
            make_record(alice, token, at=now, model="", **fail),
            # A priced model whose every request failed is still a model to filter by.
            make_record(alice, token, at=now, model="gpt-4o-mini", status=502, cost=0),
        ]
    )
    ModelPrice.objects.create(model="claude-sonnet-4", vendor="Anthropic")
    return token


def test_filter_lists_offer_only_real_models(alice_client, alice, junk):
    assert stats.used_models(alice) == ["gpt-4o-mini"]
    html = alice_client.get(reverse("console:dashboard")).content.decode()
    for name in ("gpt-5-nonexistent", "no-such-model"):
        assert name not in html
    log = alice_client.get(reverse("logs:list")).content.decode()
    assert "no-such-model" not in log.split('name="model"')[1].split("</select>")[0]


def test_a_failed_model_that_is_priced_is_offered(alice, junk):
    write_batch([make_record(alice, junk, model="claude-sonnet-4", status=502, cost=0)])
    assert stats.used_models(alice) == ["claude-sonnet-4", "gpt-4o-mini"]


def test_a_model_that_answered_is_offered_even_unpriced(alice, junk):
    write_batch([make_record(alice, junk, model="my-fine-tune", cost=7)])
    assert "my-fine-tune" in stats.used_models(alice)


def test_the_spend_chart_has_no_junk_and_no_unnamed_series(alice_client, junk):
    html = alice_client.get(reverse("console:dashboard")).content.decode()
    spend = json.loads(html.split('id="spend-data" type="application/json">')[1].split("<")[0])
    assert [entry["model"] for entry in spend["models"]] == ["gpt-4o-mini"]
    assert sum(spend["errors"]) == 4  # the failures still count, as errors


def test_many_models_make_at_most_max_series_the_rest_as_other(alice, default_line):
    token = token_create(user=alice, name="backend", line=default_line, notify=False)[0]
    now = timezone.now()
    names = [f"model-{i:02d}" for i in range(12)]
    write_batch(
        [
            make_record(alice, token, at=now, model=name, cost=1000 - i)
            for i, name in enumerate(names)
        ]
        + [make_record(alice, token, at=now, model="", cost=5)]
    )
    spend = stats.daily_spend_by_model(alice, 7, timezone.get_current_timezone())
    series = [entry["model"] for entry in spend["models"]]
    assert len(series) == stats.MAX_SERIES
    assert series[:-1] == names[: stats.MAX_SERIES - 1]
    assert series[-1] == "Other" and spend["models"][-1]["other"]
    other = sum(spend["models"][-1]["cost"])
    assert other == sum(1000 - i for i in range(stats.MAX_SERIES - 1, 12)) + 5
    assert len(set(series)) == len(series)
