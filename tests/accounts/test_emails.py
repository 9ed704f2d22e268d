"""A user's emails: the preferences saved from the profile, the notice of a new sign-in."""

from django.core import mail
from django.urls import reverse

from accounts.models import NotificationSettings
from billing.models import ModelPrice
from tests.conftest import PASSWORD


def test_email_preferences_are_saved_from_the_profile(alice_client, alice):
    ModelPrice.objects.create(model="gpt-4o-mini", vendor="OpenAI")
    response = alice_client.post(
        reverse("console:notifications"),
        {
            "price_emails": "on",
            "price_scope": "chosen",
            "price_vendors": ["OpenAI"],
            "maintenance_emails": "on",
            "low_balance_emails": "on",
            "low_balance_threshold_usd": "2.5",
            "security_emails": "on",
        },
    )
    assert response.status_code == 302
    prefs = NotificationSettings.objects.get(user=alice)
    assert (prefs.price_scope, prefs.price_vendors, prefs.low_balance_threshold) == (
        "chosen",
        ["OpenAI"],
        2_500_000,
    )
    response = alice_client.post(
        reverse("console:notifications"),
        {
            "price_emails": "on",
            "price_scope": "chosen",
            "low_balance_threshold_usd": "lots",
        },
    )
    html = response.content.decode()
    assert "Choose at least one vendor or model, or every model." in html
    assert "Enter an amount in dollars, such as 5." in html


def test_a_sign_in_from_a_new_address_sends_a_security_notice(
    client, alice, django_capture_on_commit_callbacks
):
    def log_in(ip):
        with django_capture_on_commit_callbacks(execute=True):
            client.post(
                reverse("account_login"),
                {"login": alice.email, "password": PASSWORD},
                REMOTE_ADDR=ip,
            )
        client.post(reverse("account_logout"))

    log_in("203.0.113.1")  # the first address known
    log_in("203.0.113.1")
    assert not mail.outbox
    log_in("198.51.100.9")
    assert [m.subject for m in mail.outbox] == ["New sign-in to your Switchboard account"]
    assert "198.51.100.9" in mail.outbox[0].body
    NotificationSettings.objects.filter(user=alice).update(security_emails=False)
    log_in("192.0.2.50")
    assert len(mail.outbox) == 1
