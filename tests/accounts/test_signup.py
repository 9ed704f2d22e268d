import re

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.urls import reverse

from accounts.models import User
from tests.conftest import PASSWORD


class CommittingClient:
    """Account emails leave through Celery once the request's transaction commits; each test
    here is one transaction, so every request's commit callbacks are run when it ends."""

    def __init__(self, client, capture):
        self.client, self.capture = client, capture

    def __getattr__(self, name):
        method = getattr(self.client, name)
        if name not in {"get", "post"}:
            return method

        def call(*args, **kwargs):
            with self.capture(execute=True):
                return method(*args, **kwargs)

        return call


@pytest.fixture
def client(client, django_capture_on_commit_callbacks):
    return CommittingClient(client, django_capture_on_commit_callbacks)


def sign_up(client, email="new@example.com", password="a-long-enough-secret"):
    return client.post(
        reverse("account_signup"),
        {"email": email, "password1": password, "password2": password},
    )


def confirmation_link(message):
    return re.search(r"https?://\S+/accounts/confirm-email/\S+/", message.body).group(0)


def test_signing_up_sends_a_verification_link_and_it_logs_the_user_in(client, db):
    response = sign_up(client)
    assert response.status_code == 302
    assert response.url == reverse("account_email_verification_sent")
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["new@example.com"]

    path = "/" + confirmation_link(mail.outbox[0]).split("/", 3)[3]
    page = client.get(path)
    assert b"Confirm your email address" in page.content
    response = client.post(path)
    assert response.status_code == 302
    assert response.url == reverse("console:dashboard")
    assert EmailAddress.objects.get(email="new@example.com").verified
    assert client.get(reverse("console:profile")).status_code == 200


def test_an_unverified_user_cannot_log_in_until_the_address_is_confirmed(client, db):
    sign_up(client)
    client.logout()
    response = client.post(
        reverse("account_login"), {"login": "new@example.com", "password": "a-long-enough-secret"}
    )
    assert response.status_code == 302
    assert response.url == reverse("account_email_verification_sent")
    assert client.get(reverse("console:profile")).status_code == 302


def test_a_reused_verification_link_says_it_was_used(client, db):
    sign_up(client)
    path = "/" + confirmation_link(mail.outbox[0]).split("/", 3)[3]
    client.post(path)
    client.logout()
    page = client.get(path)
    assert page.status_code == 200
    assert b"This link has already been used or has expired." in page.content


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "This password is too short. It must contain at least 10 characters."),
        ("password123", "This password is too common."),
        ("12345678901234", "This password is entirely numeric."),
    ],
)
def test_a_weak_password_is_refused_with_the_reason(client, db, password, message):
    response = sign_up(client, password=password)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not User.objects.filter(email="new@example.com").exists()


def test_a_wrong_password_gets_a_clear_message(client, alice):
    response = client.post(
        reverse("account_login"), {"login": alice.email, "password": "not-the-password"}
    )
    assert response.status_code == 200
    assert "The email address and/or password you specified are not correct." in (
        response.content.decode()
    )


def test_repeated_failed_logins_are_rate_limited(client, alice):
    for _attempt in range(5):
        client.post(reverse("account_login"), {"login": alice.email, "password": "wrong-guess"})
    response = client.post(reverse("account_login"), {"login": alice.email, "password": PASSWORD})
    assert response.status_code == 200
    assert "Too many failed login attempts. Try again later." in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_logging_in_with_the_right_password_reaches_the_dashboard(client, alice):
    response = client.post(reverse("account_login"), {"login": alice.email, "password": PASSWORD})
    assert response.status_code == 302
    assert response.url == reverse("console:dashboard")


def test_password_reset_mails_a_link_to_the_sites_address(client, alice, settings):
    response = client.post(reverse("account_reset_password"), {"email": alice.email})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    assert "/accounts/password/reset/key/" in mail.outbox[0].body
