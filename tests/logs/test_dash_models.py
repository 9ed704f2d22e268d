"""The dashboard's model filter lists the models of the whole account, read with its figures
in the one rollup statement, whatever token or model is chosen."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from logs import stats
from logs.writer import write_batch
from tests.logs.test_pages import make_record
from tokens.services import token_create


@pytest.fixture
def two_tokens_two_models(alice, default_line):
    backend = token_create(user=alice, name="backend", line=default_line, notify=False)[0]
    batch = token_create(user=alice, name="batch", line=default_line, notify=False)[0]
    now = timezone.now()
    write_batch(
        [
            make_record(alice, backend, at=now),
            make_record(alice, batch, at=now - timedelta(days=40), model="o3-mini"),
            # Past the days a filter list looks back: not offered.
            make_record(alice, batch, at=now - timedelta(days=95), model="gpt-3.5-turbo"),
        ]
    )
    return backend, batch


def test_the_filter_list_is_the_accounts_models(alice, alice_client, two_tokens_two_models):
    response = alice_client.get(reverse("console:dashboard"))
    assert response.context["models"] == ["gpt-4o-mini", "o3-mini"] == stats.used_models(alice)


def test_a_chosen_token_or_model_keeps_every_model_in_the_list(alice_client, two_tokens_two_models):
    backend, _batch = two_tokens_two_models
    for filters in ({"token": backend.pk}, {"model": "gpt-4o-mini"}):
        response = alice_client.get(reverse("console:dashboard"), filters)
        assert response.context["models"] == ["gpt-4o-mini", "o3-mini"]


def test_another_users_models_are_not_listed(bob_client, two_tokens_two_models):
    assert bob_client.get(reverse("console:dashboard")).context["models"] == []
