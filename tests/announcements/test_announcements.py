import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail, signing
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import EmailDelivery, NotificationSettings
from billing import services as billing
from billing.models import ModelPrice, PriceAdjustment
from console.announcements import delivery
from console.announcements.models import Announcement
from console.announcements.tasks import send_announcement_batch
from console.lib import unsubscribe
from console.lib.markdown import render_markdown
from tests.conftest import make_user
from tests.smtp_sink import SmtpSink


@pytest.fixture
def now_commits(django_capture_on_commit_callbacks):
    """Runs the on-commit callbacks (Celery tasks, eager here) of whatever happens inside."""

    def run():
        return django_capture_on_commit_callbacks(execute=True)

    return run


def subscribe(user, **prefs):
    NotificationSettings.objects.update_or_create(
        user=user, defaults={"price_emails": True, **prefs}
    )


@pytest.fixture
def mini(db):
    return ModelPrice.objects.create(
        model="gpt-4o-mini",
        vendor="OpenAI",
        model_multiplier=Decimal("0.075"),
        completion_multiplier=Decimal(4),
    )


def test_markdown_is_rendered_harmless():
    html = render_markdown(
        "# Hi\n\n<script>alert(1)</script>\n\n[click](javascript:alert(1)) "
        '<img src=x onerror="alert(1)"> <a href="https://ok.example" onclick="x()">ok</a>\n\n'
        "| a | b |\n|---|---|\n| 1 | 2 |"
    )
    assert "<script" not in html and "alert(1)</script>" not in html
    assert "javascript:" not in html
    assert "onerror" not in html and "onclick" not in html and "<img" not in html
    assert '<a href="https://ok.example" rel="noopener noreferrer nofollow">ok</a>' in html
    assert "<table>" in html


def test_announcements_are_public_newest_first_with_pinned_on_top(client, db):
    now = timezone.now()
    Announcement.objects.create(title="Old", body="a", published_at=now - timedelta(days=2))
    Announcement.objects.create(
        title="Pinned", body="b", pinned=True, published_at=now - timedelta(days=5)
    )
    Announcement.objects.create(title="New", body="c", published_at=now - timedelta(hours=1))
    Announcement.objects.create(title="Draft", body="d")
    html = client.get(reverse("console:announcements")).content.decode()
    assert html.index("Pinned") < html.index("New") < html.index("Old")
    assert "Draft" not in html


def test_a_draft_is_visible_to_staff_only(client, staff_client, db):
    draft = Announcement.objects.create(title="Soon", body="d")
    assert client.get(draft.get_absolute_url()).status_code == 404
    assert (
        "Draft, visible to staff only"
        in staff_client.get(draft.get_absolute_url()).content.decode()
    )


def test_the_feed_is_atom(client, db):
    Announcement.objects.create(title="Feed me", body="**bold**", published_at=timezone.now())
    response = client.get(reverse("console:announcement_feed"))
    assert response["Content-Type"].startswith("application/atom+xml")
    assert "Feed me" in response.content.decode()


def test_unread_announcements_show_a_badge_until_the_list_is_seen(alice_client):
    Announcement.objects.create(title="News one", body="x", published_at=timezone.now())
    html = alice_client.get(reverse("console:dashboard")).content.decode()
    assert 'aria-label="1 unread"' in html
    assert "New announcements" in html and "News one" in html
    alice_client.get(reverse("console:announcements"))
    html = alice_client.get(reverse("console:dashboard")).content.decode()
    assert "unread" not in html and "New announcements" not in html


def test_a_price_change_announces_old_and_new_prices_and_emails_subscribers(
    charlie, alice, bob, mini, now_commits
):
    subscribe(alice)
    NotificationSettings.objects.create(user=bob, price_emails=False)
    with now_commits():
        billing.price_change(
            target=mini,
            new_values={"model_multiplier": Decimal("0.1"), "completion_multiplier": Decimal(5)},
            reason="upstream",
            staff_user=charlie,
            note="Costs rose.",
        )
    announcement = Announcement.objects.get()
    assert announcement.kind == "price" and announcement.published_at
    html = announcement.body_html
    assert "gpt-4o-mini" in html
    assert "$0.15 → $0.20" in html  # input per 1M: 0.075 → 0.1
    assert "$0.60 → $1.00" in html  # output per 1M: 0.075 × 4 → 0.1 × 5
    assert "Costs rose." in html
    assert PriceAdjustment.objects.filter(announcement=announcement).count() == 2
    assert [m.to for m in mail.outbox] == [[alice.email]]
    message = mail.outbox[0]
    assert message.subject == "Price change: gpt-4o-mini"
    assert "$0.15 → $0.20" in message.alternatives[0][0]
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/unsubscribe/" in message.extra_headers["List-Unsubscribe"]
    # Running a batch again sends nothing more.
    assert send_announcement_batch(announcement.pk, [alice.pk]) == 0
    assert len(mail.outbox) == 1
    assert delivery.delivery_counts(announcement) == {"sent": 1}


def test_staff_publish_adjustments_recorded_without_an_announcement(
    staff_client, charlie, alice, mini, now_commits
):
    subscribe(alice)
    # Recorded before every price change was announced: it waits, unapplied, until published.
    PriceAdjustment.objects.create(
        model_price=mini,
        field="model_multiplier",
        old_value=Decimal("0.075"),
        new_value=Decimal("0.1"),
        reason="upstream",
        batch="legacy",
        staff_user=charlie,
    )
    assert billing.price_adjustments_apply_due() == 0
    with now_commits():
        staff_client.post(
            reverse("admin:billing_priceadjustment_changelist"),
            {
                "action": "publish",
                "_selected_action": list(PriceAdjustment.objects.values_list("pk", flat=True)),
                "apply": "1",
                "note": "Costs rose.",
            },
        )
    announcement = Announcement.objects.get()
    assert "Costs rose." in announcement.body_html
    assert "$0.15 → $0.20" in announcement.body_html
    assert PriceAdjustment.objects.get().announcement == announcement
    mini.refresh_from_db()
    assert mini.model_multiplier == Decimal("0.1")  # its time had come: it applies once published
    assert [m.to for m in mail.outbox] == [[alice.email]]


def test_a_scheduled_change_is_announced_with_its_time(charlie, mini):
    when = timezone.now() + timedelta(days=3)
    adjustments = billing.price_change(
        target=mini,
        new_values={"model_multiplier": Decimal("0.2")},
        reason="planned",
        staff_user=charlie,
        effective_at=when,
    )
    announcement = adjustments[0].announcement
    assert f"{timezone.localtime(when):%Y-%m-%d %H:%M}" in announcement.body_html
    assert "These prices change on" in announcement.body_html


def test_subscribers_who_chose_vendors_get_only_their_vendors_changes(
    charlie, alice, bob, mini, now_commits
):
    claude = ModelPrice.objects.create(model="claude-x", vendor="Anthropic")
    subscribe(alice, price_scope="chosen", price_vendors=["Anthropic"])
    subscribe(bob, price_scope="chosen", price_models=["gpt-4o-mini"])
    with now_commits():
        billing.price_change(
            target=claude, new_values={"model_multiplier": 2}, reason="x", staff_user=charlie
        )
    assert [m.to for m in mail.outbox] == [[alice.email]]


def test_one_click_unsubscribe_works_without_login_or_csrf(alice, mini):
    subscribe(alice)
    url = unsubscribe.unsubscribe_url(alice, "price")
    path = "/" + url.split("/", 3)[3]
    strict = Client(enforce_csrf_checks=True)
    page = strict.get(path)
    assert "Stop sending price-change emails" in page.content.decode()
    response = strict.post(path, {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert "gets no more price-change emails" in response.content.decode()
    assert not NotificationSettings.objects.get(user=alice).price_emails


@pytest.mark.parametrize("damage", ["tampered", "expired", "foreign"])
def test_a_bad_unsubscribe_link_changes_nothing_and_says_so(client, alice, damage, monkeypatch):
    subscribe(alice)
    token = signing.dumps({"u": alice.pk, "k": "price"}, salt=unsubscribe.SALT, compress=True)
    if damage == "tampered":
        token = token[:-3] + ("abc" if token[-3:] != "abc" else "xyz")
    elif damage == "expired":
        monkeypatch.setattr(unsubscribe, "MAX_AGE", -1)
    else:
        token = signing.dumps({"u": alice.pk, "k": "price"}, salt="another purpose")
    response = client.post(reverse("console:unsubscribe", args=[token]))
    assert response.status_code == 400
    assert "Nothing was changed." in response.content.decode()
    assert NotificationSettings.objects.get(user=alice).price_emails


def test_a_mail_server_that_is_down_fails_then_delivers_once(alice, bob, charlie, mini, settings):
    subscribe(alice)
    subscribe(bob)
    sink = SmtpSink()
    settings.MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": sink.port, "timeout": 2},
        }
    }
    adjustments = billing.price_change(
        target=mini, new_values={"model_multiplier": 1}, reason="x", staff_user=charlie
    )
    announcement = adjustments[0].announcement
    with pytest.raises(OSError):
        delivery.deliver_batch(announcement_id=announcement.pk, user_ids=[alice.pk, bob.pk])
    failed = EmailDelivery.objects.get(recipient=alice.email)
    assert failed.status == "failed" and failed.last_error
    sink.start()
    try:
        delivery.deliver_batch(announcement_id=announcement.pk, user_ids=[alice.pk, bob.pk])
        delivery.deliver_batch(announcement_id=announcement.pk, user_ids=[alice.pk, bob.pk])
        assert sorted(sink.sink.recipients()) == [alice.email, bob.email]
        assert delivery.delivery_counts(announcement) == {"sent": 2}
    finally:
        sink.stop()


def test_a_crashed_batch_resumes_its_own_claims(alice, charlie, mini):
    subscribe(alice)
    adjustments = billing.price_change(
        target=mini, new_values={"model_multiplier": 1}, reason="x", staff_user=charlie
    )
    announcement = adjustments[0].announcement
    key = f"announcement:{announcement.pk}"
    EmailDelivery.objects.create(
        key=key,
        recipient=alice.email,
        template="announcement",
        status="sending",
        claimed_by="task-1",
        claimed_at=timezone.now(),
    )
    delivery.deliver_batch(announcement_id=announcement.pk, user_ids=[alice.pk], claimer="task-2")
    assert not mail.outbox  # another task's fresh claim is left alone
    delivery.deliver_batch(announcement_id=announcement.pk, user_ids=[alice.pk], claimer="task-1")
    assert len(mail.outbox) == 1  # the same task, run again, finishes its own
    message_id = mail.outbox[0].extra_headers["Message-ID"]
    assert re.fullmatch(r"<\d+\.[0-9a-f]{20}@[^>]+>", message_id)


def test_the_maintenance_window_shows_a_quiet_banner(client, db, settings):
    from console.context_processors import maintenance_notice

    hour = timezone.localtime(timezone.now(), timezone.get_default_timezone()).hour
    settings.MAINTENANCE_START_HOUR, settings.MAINTENANCE_END_HOUR = hour, hour + 1
    assert "Daily maintenance until" in maintenance_notice(timezone.now())
    settings.MAINTENANCE_START_HOUR, settings.MAINTENANCE_END_HOUR = (
        (hour + 2) % 24,
        (hour + 3) % 24,
    )
    assert maintenance_notice(timezone.now()) is None
    now = timezone.now()
    Announcement.objects.create(
        title="Database upgrade",
        kind="maintenance",
        body="x",
        published_at=now,
        starts_at=now - timedelta(minutes=5),
        ends_at=now + timedelta(hours=1),
    )
    assert "Database upgrade" in maintenance_notice(now)
    html = client.get(reverse("console:help")).content.decode()
    assert "Maintenance in progress until" in html


def test_staff_see_deliveries_of_an_announcement(staff_client, alice, charlie, mini, now_commits):
    subscribe(alice)
    bob = make_user("bob2@example.com")
    subscribe(bob)
    NotificationSettings.objects.filter(user=bob).update(price_emails=True)
    with now_commits():
        adjustments = billing.price_change(
            target=mini, new_values={"model_multiplier": 1}, reason="x", staff_user=charlie
        )
        announcement = adjustments[0].announcement
    html = staff_client.get(reverse("admin:announcements_announcement_changelist")).content.decode()
    assert "Sent 2" in html
    assert announcement.title in html
