"""A batch of announcement emails costs a few statements whatever its size, and one more per
email (its delivery marked sent), and links each subscriber to their own unsubscribe page."""

import pytest
from django.core import mail

from accounts.models import NotificationSettings, User
from console.announcements import delivery
from console.announcements.models import Announcement
from console.lib import unsubscribe

pytestmark = pytest.mark.django_db


@pytest.fixture
def announcement():
    return Announcement.objects.create(
        kind="price",
        title="Cheaper embeddings",
        body="Less per token.",
        published_at="2026-05-01T00:00Z",
    )


def subscribers(count, start=0):
    users = User.objects.bulk_create(
        User(email=f"reader{i}@example.com", name=f"Reader {i}", password="!")
        for i in range(start, start + count)
    )
    NotificationSettings.objects.bulk_create(
        NotificationSettings(user=user, price_emails=True) for user in users
    )
    return [user.pk for user in users]


def statements(django_assert_max_num_queries, announcement, user_ids):
    with django_assert_max_num_queries(10_000) as queries:
        sent, _skipped = delivery.deliver_batch(announcement_id=announcement.pk, user_ids=user_ids)
    assert sent == len(user_ids)
    return len(queries)


def test_a_batch_costs_one_statement_more_per_email(announcement, django_assert_max_num_queries):
    small = statements(django_assert_max_num_queries, announcement, subscribers(3))
    large = statements(django_assert_max_num_queries, announcement, subscribers(9, start=3))
    assert large - small == 6
    assert len(mail.outbox) == 12


def test_each_subscriber_gets_their_own_unsubscribe_link(announcement):
    user_ids = subscribers(3)
    delivery.deliver_batch(announcement_id=announcement.pk, user_ids=user_ids)
    for user in User.objects.filter(pk__in=user_ids):
        [message] = [m for m in mail.outbox if m.to == [user.email]]
        link = message.extra_headers["List-Unsubscribe"].strip("<>")
        assert link in message.body and f"Hello {user.name}," in message.body
        assert reads_as(link) == reads_as(unsubscribe.unsubscribe_url(user, "price"))


def reads_as(link):
    """The address of a link, and the user and kind its token names."""
    address, token = link.rstrip("/").rsplit("/", 1)
    return address, unsubscribe.read(token)
