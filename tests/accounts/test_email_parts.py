"""Every email the site sends names the product and has a plain part and a real HTML part:
django-allauth's (sign-up, password reset, notices) as much as our own."""

import re
from pathlib import Path

import allauth
import pytest
from django.apps import apps
from django.conf import settings
from django.core import mail
from django.urls import reverse

from tests.accounts.test_mfa import activate_totp
from tests.conftest import PASSWORD

TEMPLATES = Path(settings.BASE_DIR) / "templates"
ALLAUTH_TEMPLATES = Path(allauth.__file__).parent / "templates"


@pytest.fixture
def send(django_capture_on_commit_callbacks):
    """Runs a request and the tasks it queued on commit (the emails); returns the new mail."""

    def run(method, *args, **kwargs):
        before = len(mail.outbox)
        with django_capture_on_commit_callbacks(execute=True):
            method(*args, **kwargs)
        return mail.outbox[before:]

    return run


def assert_well_formed(message):
    """The product's name in the subject and both parts, no empty site name, no leftover
    template tags, and an HTML part in our layout that is not the plain text."""
    html = dict((kind, content) for content, kind in message.alternatives)["text/html"]
    assert settings.SITE_NAME in message.subject
    assert settings.SITE_NAME in message.body and settings.SITE_NAME in html
    for part in (message.subject, message.body, html):
        assert "from !" not in part and " on ." not in part
        assert "{{" not in part and "{%" not in part
    assert not re.search(r"[A-Z][a-z]+ [A-Z][a-z]+", message.subject.split("] ", 1)[1])
    assert html.strip() != message.body.strip()
    assert html.lstrip().startswith("<!DOCTYPE html>") and "<p>" in html
    assert "<" not in message.body


def test_signing_up_sends_a_confirmation_in_the_products_name(client, db, send):
    password = "a-long-enough-secret"
    [message] = send(
        client.post,
        reverse("account_signup"),
        {"email": "new@example.com", "password1": password, "password2": password},
    )
    assert_well_formed(message)
    assert message.subject == "[Switchboard] Confirm your email address"
    assert "Welcome to Switchboard." in message.body
    link = re.search(r"http://\S+/accounts/confirm-email/\S+/", message.body).group(0)
    assert f'href="{link}"' in message.alternatives[0][0]


def test_signing_up_with_a_taken_address_says_the_account_exists(client, alice, send):
    [message] = send(
        client.post,
        reverse("account_signup"),
        {
            "email": alice.email,
            "password1": "another-long-secret",
            "password2": "another-long-secret",
        },
    )
    assert_well_formed(message)
    assert message.subject == "[Switchboard] You already have an account"
    assert "/accounts/password/reset/" in message.body


def test_a_password_reset_link_comes_in_the_products_name(client, alice, send):
    [message] = send(client.post, reverse("account_reset_password"), {"email": alice.email})
    assert_well_formed(message)
    assert message.subject == "[Switchboard] Reset your password"
    assert message.body.startswith("Hello Alice,")
    assert "/accounts/password/reset/key/" in message.alternatives[0][0]


def test_a_reset_for_an_unknown_address_says_no_account_uses_it(client, db, send):
    [message] = send(client.post, reverse("account_reset_password"), {"email": "who@example.com"})
    assert_well_formed(message)
    assert message.subject == "[Switchboard] No account with this address"
    assert "/accounts/signup/" in message.body


def test_a_new_address_is_confirmed_by_an_email_to_it(client, alice, send):
    client.force_login(alice)
    [message] = send(
        client.post, reverse("account_email"), {"action_add": "", "email": "alice@example.org"}
    )
    assert message.to == ["alice@example.org"]
    assert_well_formed(message)
    assert "alice@example.org" in message.body


def test_account_notices_are_well_formed_when_switched_on(client, alice, send, settings):
    settings.ACCOUNT_EMAIL_NOTIFICATIONS = True
    client.post(reverse("account_login"), {"login": alice.email, "password": PASSWORD})
    with_totp = send(activate_totp, client)
    assert "[Switchboard] Two-factor authentication is on" in {m.subject for m in with_totp}
    new = "a-new-long-secret"
    [changed] = send(
        client.post,
        reverse("account_change_password"),
        {"oldpassword": PASSWORD, "password1": new, "password2": new},
    )
    assert changed.subject == "[Switchboard] Your password changed"
    for message in [*with_totp, changed]:
        assert_well_formed(message)


def allauth_emails():
    """The emails that the parts of django-allauth installed here can send (not those of the
    security keys, which MFA_SUPPORTED_TYPES leaves out): their template prefixes."""
    installed = {app.name.removeprefix("allauth.") for app in apps.get_app_configs()}
    for subject in sorted(ALLAUTH_TEMPLATES.glob("*/email/*_subject.txt")):
        prefix = str(subject.relative_to(ALLAUTH_TEMPLATES)).removesuffix("_subject.txt")
        if prefix.split("/")[0] in installed and (
            "webauthn" not in prefix or "webauthn" in settings.MFA_SUPPORTED_TYPES
        ):
            yield prefix


@pytest.mark.parametrize("prefix", list(allauth_emails()))
def test_every_allauth_email_has_our_plain_and_html_parts(prefix):
    for part in ("_subject.txt", "_message.txt", "_message.html"):
        assert (TEMPLATES / f"{prefix}{part}").is_file(), f"{prefix}{part}"
    assert "base_" in (TEMPLATES / f"{prefix}_message.html").read_text()


def site_emails():
    return sorted(
        p.name.removesuffix("-subject.html") for p in TEMPLATES.glob("emails/*-subject.html")
    )


@pytest.mark.parametrize("name", site_emails())
def test_every_site_email_has_three_parts_and_names_the_product(name):
    text = (TEMPLATES / f"emails/{name}-body-text.html").read_text()
    html = (TEMPLATES / f"emails/{name}-body-html.html").read_text()
    assert html.startswith('{% extends "emails/base.html" %}')
    assert "{{ site_name }}" in text
