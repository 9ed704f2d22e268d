"""The email of a price change: its subject says "Price change" once, and its plain part reads
as plain text (no Markdown marks, the table as lines)."""

from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone

from accounts.models import NotificationSettings
from billing import services as billing
from billing.models import ModelPrice
from console.announcements import delivery
from console.announcements.models import Announcement
from console.lib.markdown import render_markdown


@pytest.fixture
def mini(db):
    return ModelPrice.objects.create(
        model="gpt-4o-mini",
        vendor="OpenAI",
        model_multiplier=Decimal("0.075"),
        completion_multiplier=Decimal(4),
    )


@pytest.fixture
def price_email(alice, charlie, mini, django_capture_on_commit_callbacks):
    """The email alice, subscribed to price changes, gets when gpt-4o-mini's prices change."""
    NotificationSettings.objects.create(user=alice, price_emails=True)
    with django_capture_on_commit_callbacks(execute=True):
        billing.price_change(
            target=mini,
            new_values={"model_multiplier": Decimal("0.1"), "completion_multiplier": Decimal(5)},
            reason="Upstream prices rose.",
            staff_user=charlie,
        )
    [message] = mail.outbox
    return message


def test_a_price_change_email_says_price_change_once_in_its_subject(price_email):
    assert price_email.subject == "Price change: gpt-4o-mini"


def test_its_plain_part_has_no_markdown_and_reads_the_table_as_lines(price_email):
    text = price_email.body
    assert "**" not in text and "|" not in text and "---" not in text
    assert "Upstream prices rose." in text
    assert (
        "gpt-4o-mini\n  Change: model multiplier 0.075 → 0.1; completion multiplier 4 → 5" in text
    )
    assert "  Input per 1M tokens: $0.15 → $0.20\n  Output per 1M tokens: $0.60 → $1.00" in text
    html = price_email.alternatives[0][0]
    assert "<table>" in html and "<strong>" in html


def send_announcement(user, **fields):
    announcement = Announcement.objects.create(body="x", published_at=timezone.now(), **fields)
    delivery.deliver_batch(announcement_id=announcement.pk, user_ids=[user.pk])
    return mail.outbox[-1].subject


def test_an_announcement_gets_its_kind_before_its_title_unless_the_title_says_it(alice):
    NotificationSettings.objects.create(user=alice, price_emails=True, maintenance_emails=True)
    assert send_announcement(alice, kind="price", title="Cheaper embeddings") == (
        "Price change: Cheaper embeddings"
    )
    assert send_announcement(alice, kind="price", title="Price changes in May") == (
        "Price changes in May"
    )
    assert send_announcement(alice, kind="maintenance", title="Database upgrade") == (
        "Maintenance: Database upgrade"
    )


def plain(markdown):
    return delivery.plain_text(render_markdown(markdown))


def test_plain_text_drops_emphasis_and_writes_links_out():
    assert plain("It is **much** _cheaper_: see [prices](https://example.com/p) or `/v1`.") == (
        "It is much cheaper: see prices (https://example.com/p) or /v1."
    )
    assert plain("Mail <help@example.com> &amp; co.") == "Mail help@example.com & co."


def test_plain_text_keeps_paragraphs_and_lists_apart():
    text = plain("# Changes\n\nFirst.\n\n- one\n- two\n    1. nested\n\nLast.")
    assert text == "Changes\n\nFirst.\n\n- one\n- two\n  1. nested\n\nLast."


def test_a_narrow_table_becomes_aligned_columns():
    text = plain("| Model | Old | New |\n|---|---|---|\n| gpt-4o | 1 | 2 |\n| o1 | 10 | 12 |")
    assert text == ("Model   Old  New\n------  ---  ---\ngpt-4o  1    2\no1      10   12")
