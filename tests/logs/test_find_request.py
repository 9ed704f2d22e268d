"""Finding one request in the log by its id (the X-Request-Id of an answer)."""

import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from logs.ids import uuid7
from logs.models import RequestLog
from logs.writer import write_batch
from tests.logs.test_pages import make_record
from tokens.services import token_create


@pytest.fixture
def request_id(alice, default_line):
    token = token_create(user=alice, name="backend", line=default_line, notify=False)[0]
    record = make_record(alice, token)
    write_batch([record])
    return record.id


def find(client, text):
    return client.get(reverse("logs:list"), {"request_id": text})


def test_a_pasted_id_opens_the_requests_breakdown(alice_client, request_id):
    response = find(alice_client, f'  "{request_id}" ')
    assert response.status_code == 302
    assert response.url == reverse("logs:breakdown", args=[request_id])


def test_an_id_without_dashes_is_found_too(alice_client, request_id):
    assert find(alice_client, request_id.hex).url == reverse("logs:breakdown", args=[request_id])


def test_another_users_request_is_not_found(bob_client, request_id):
    html = find(bob_client, str(request_id)).content.decode()
    assert f"No request {request_id} in your log" in html
    assert "Cost breakdown" not in html and "203.0.113.5" not in html


def test_an_unknown_id_is_not_found(alice_client, request_id):
    html = find(alice_client, str(uuid7())).content.decode()
    assert "in your log. Check that you are signed in to the account" in html


@pytest.mark.parametrize("text", ["req_12345", "0192f0c4-5a1e", "<script>", "x" * 200])
def test_a_malformed_id_is_explained(alice_client, request_id, text):
    html = find(alice_client, text).content.decode()
    assert "is not a request id" in html or "at most 100 characters" in html
    assert "<script>" not in html.split("<main")[1].split("</main>")[0]


def test_a_uuid_that_is_not_ours_says_so(alice_client, request_id):
    html = find(alice_client, str(uuid.uuid4())).content.decode()
    assert "is not one of our request ids" in html


def test_an_empty_search_asks_for_an_id(alice_client, request_id):
    assert "Paste a request id" in find(alice_client, " ").content.decode()


def test_an_id_older_than_the_logs_says_they_are_gone(alice_client, alice, settings):
    settings.LOG_RETENTION_DAYS = 30
    old = timezone.now() - timedelta(days=45)
    millis = int(old.timestamp() * 1000)
    key = uuid.UUID(int=(millis << 80) | (uuid7().int & ((1 << 80) - 1)))
    html = find(alice_client, str(key)).content.decode()
    assert f"was made on {old:%Y-%m-%d}" in html and "kept 30 days" in html


def test_the_search_costs_one_lookup(alice_client, request_id, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):  # the session, the user, the row
        find(alice_client, str(request_id))
    assert RequestLog.objects.count() == 1
