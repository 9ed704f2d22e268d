"""The header's count of unread announcements: the dashboard takes it from its own list of
them, other pages count when they show the header, and a fragment without it reads none."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from console.announcements.models import Announcement

# What an unread count reads: when this user last saw the list.
UNREAD = re.compile(r"\bannouncements_seen_at\b")


@pytest.fixture
def five_unread(db):
    now = timezone.now()
    for n in range(5):
        Announcement.objects.create(
            title=f"News {n}", body="x", published_at=now - timedelta(minutes=n)
        )


def _unread_queries(client, path, **headers):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path, headers=headers)
    assert response.status_code == 200
    return response, [q for q in queries.captured_queries if UNREAD.search(q["sql"])]


def test_the_dashboard_counts_all_unread_and_lists_three_in_one_query(alice_client, five_unread):
    response, queries = _unread_queries(alice_client, reverse("console:dashboard"))
    html = response.content.decode()
    assert html.count('aria-label="5 unread"') == 2  # the wide and the narrow menu
    assert "News 2" in html and "News 3" not in html
    assert len(queries) == 1


def test_another_page_counts_once_for_both_menus(alice_client, five_unread):
    response, queries = _unread_queries(alice_client, reverse("console:help"))
    assert response.content.decode().count('aria-label="5 unread"') == 2
    assert len(queries) == 1


def test_the_count_leaves_out_what_was_seen(alice, alice_client, five_unread):
    alice_client.get(reverse("console:announcements"))
    Announcement.objects.create(title="Later", body="x", published_at=timezone.now())
    html = alice_client.get(reverse("console:help")).content.decode()
    assert 'aria-label="1 unread"' in html


def test_the_live_refresh_reads_no_announcements(alice_client, five_unread):
    _response, queries = _unread_queries(
        alice_client, reverse("console:dashboard_live"), HX_Request="true"
    )
    assert queries == []
