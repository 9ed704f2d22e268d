"""django-allauth's pages speak like the rest of the site: sentence case in headings, buttons
and labels ("Log out", not "Sign Out"), and breadcrumbs that name the page."""

import itertools
import re
import time
from html.parser import HTMLParser

import pytest
from django.core import mail
from django.urls import reverse

from tests.accounts.test_mfa import log_in, totp
from tests.conftest import PASSWORD

# allauth's stock words, none of which may show.
TITLE_CASE = [
    "Sign Out", "Sign In", "Sign Up", "Two-Factor Authentication", "Remember Me",
    "Forgot Password", "Forgot Your Password", "Change Password", "Set Password",
    "Password Reset", "Reset My Password", "Email Address", "Email Addresses", "Add Email",
    "Change Email", "Make Primary", "Re-send Verification", "Cancel Change", "Current Password",
    "New Password", "Recovery Codes", "Authenticator App", "Activate Authenticator App",
    "Deactivate Authenticator App", "Confirm Access", "Bad Token", "Account Inactive",
    "Security Keys", "Trust this Browser", "Don't Trust", "Profile / Security",
]  # fmt: skip
# Words that are capitalised as names, whatever their place in a sentence.
NAMES = {"Switchboard", "Google", "Authenticator", "1Password", "Aegis", "API", "QR"}


class PageWords(HTMLParser):
    """The words of a page that must be in sentence case (its title; headings, buttons,
    labels within <main>) and the text of its breadcrumb."""

    WATCHED = {"title", "h1", "h2", "h3", "button", "label", "legend", "summary"}

    def __init__(self, html):
        super().__init__()
        self.open, self.in_main = [], False
        self.phrases, self.crumb = [], None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "main":
            self.in_main = True
        if tag == "nav" and "breadcrumb" in classes:
            self.crumb = ""
        if tag in self.WATCHED or (tag == "a" and "btn" in classes):
            self.open.append([tag, ""])

    def handle_endtag(self, tag):
        if tag == "main":
            self.in_main = False
        if self.open and self.open[-1][0] == tag:
            _tag, text = self.open.pop()
            self.phrases.append(" ".join(text.split()))
        if tag == "nav" and self.crumb is not None and not isinstance(self.crumb, tuple):
            self.crumb = (" ".join(self.crumb.split()),)

    def handle_data(self, data):
        if self.open and (self.in_main or self.open[-1][0] == "title"):
            self.open[-1][1] += data
        if isinstance(self.crumb, str):
            self.crumb += data

    @property
    def breadcrumb(self):
        return self.crumb[0] if isinstance(self.crumb, tuple) else None


def title_cased(phrase):
    """The pairs of capitalised words in a phrase, other than names and its first word."""
    words = [w for w in re.findall(r"[\w'-]+", phrase) if w not in NAMES]
    return [
        f"{a} {b}"
        for a, b in itertools.pairwise(words)
        if a[:1].isupper() and b[:1].isupper() and b[1:2].islower()
    ]


def check(response, breadcrumb=None):
    assert response.status_code == 200, response
    html = response.content.decode()
    for phrase in TITLE_CASE:
        assert phrase not in html, phrase
    words = PageWords(html)
    assert [p for p in words.phrases if title_cased(p)] == []
    assert words.breadcrumb == breadcrumb
    return words


def test_the_entrance_pages_are_in_sentence_case(client, alice):
    check(client.get(reverse("account_login")))
    check(client.get(reverse("account_signup")))
    check(client.get(reverse("account_reset_password")))
    check(client.get(reverse("account_reset_password_done")))
    check(client.get(reverse("account_reset_password_from_key", args=["1-x", "y"])))
    check(client.get(reverse("account_email_verification_sent")))
    check(client.get(reverse("account_confirm_email", args=["not-a-key"])))
    check(client.get(reverse("account_inactive")))


def test_the_login_form_says_remember_me_in_sentence_case(client, db):
    words = check(client.get(reverse("account_login")))
    assert "Remember me" in words.phrases


def test_a_password_reset_link_opens_a_page_in_sentence_case(
    client, alice, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("account_reset_password"), {"email": alice.email})
    link = re.search(r"/accounts/password/reset/key/\S+/", mail.outbox[0].body).group(0)
    page = client.get(link, follow=True)
    words = check(page)
    assert "New password" in words.phrases and "New password (again)" in words.phrases


def test_the_logout_page_has_no_security_breadcrumb(client, alice):
    client.force_login(alice)
    words = check(client.get(reverse("account_logout")), breadcrumb=None)
    assert "Log out" in words.phrases


@pytest.mark.parametrize(
    ("url", "breadcrumb"),
    [
        ("account_change_password", "Profile / Password"),
        ("account_email", "Profile / Email address"),
        ("mfa_index", "Profile / Two-factor authentication"),
    ],
)
def test_the_account_settings_pages_name_themselves_in_the_breadcrumb(
    client, alice, url, breadcrumb
):
    client.force_login(alice)
    check(client.get(reverse(url)), breadcrumb=breadcrumb)


def test_the_change_password_form_labels_are_in_sentence_case(client, alice):
    client.force_login(alice)
    words = check(client.get(reverse("account_change_password")), "Profile / Password")
    assert {"Current password", "New password", "New password (again)"} <= set(words.phrases)


def test_setting_a_first_password_is_in_sentence_case(client, alice):
    alice.set_unusable_password()
    alice.save()
    client.force_login(alice)
    check(client.get(reverse("account_set_password")), "Profile / Password")


def test_the_two_factor_pages_are_in_sentence_case(client, alice):
    log_in(client, alice)
    page = client.get(reverse("mfa_activate_totp"), follow=True)
    check(page)  # asks for the password again first
    client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    setup = "Profile / Two-factor authentication / Set up"
    page = client.get(reverse("mfa_activate_totp"))
    check(page, setup)
    secret = re.search(r'id="authenticator_secret"[^>]*value="(\w+)"', page.content.decode())[1]
    client.post(reverse("mfa_activate_totp"), {"code": totp(secret)})
    codes = "Profile / Two-factor authentication / Recovery codes"
    check(client.get(reverse("mfa_view_recovery_codes")), codes)
    check(client.get(reverse("mfa_generate_recovery_codes")), codes)
    check(client.get(reverse("mfa_index")), "Profile / Two-factor authentication")
    off = "Profile / Two-factor authentication / Turn off"
    check(client.get(reverse("mfa_deactivate_totp")), off)
    check(client.get(reverse("mfa_reauthenticate")))

    client.post(reverse("account_logout"))
    log_in(client, alice)
    words = check(client.get(reverse("mfa_authenticate")))
    assert "Two-factor authentication" in words.phrases
    client.post(reverse("mfa_authenticate"), {"code": totp(secret, time.time() + 30)})
    assert client.get(reverse("console:dashboard")).status_code == 200
