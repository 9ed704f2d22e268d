"""The staff console has one way in: allauth's sign-in, with its second factor and its limits.
Django's admin login form, which knows neither, answers only with a redirect."""

import time

from django.test import Client
from django.urls import reverse

from tests.accounts.test_mfa import activate_totp, log_in, totp
from tests.conftest import PASSWORD, staff_client_for
from tests.security.test_rate_limits import LOGIN_REFUSED, WRONG, _limit

ADMIN = "/admin/"
ACCOUNTS = "/admin/billing/account/"


def _in_admin(client):
    return client.get(ACCOUNTS).status_code == 200


def test_the_admin_login_form_does_not_sign_anyone_in(client, charlie):
    response = client.post(
        "/admin/login/?next=/admin/", {"username": charlie.email, "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response.url.startswith(reverse("account_login"))
    assert "_auth_user_id" not in client.session
    for path in (ADMIN, ACCOUNTS, "/billing/", "/tokens/"):
        assert client.get(path).status_code == 302, path


def test_staff_with_totp_need_the_code_before_the_admin(charlie):
    client = Client()
    log_in(client, charlie)
    secret = activate_totp(client)
    client.post(reverse("account_logout"))

    # The password alone gets the code page, and nothing else.
    response = log_in(client, charlie)
    assert response.url == reverse("mfa_authenticate")
    assert client.get(ACCOUNTS).status_code == 302
    assert client.get("/billing/").status_code == 302
    # Wrong codes do not help.
    response = client.post(reverse("mfa_authenticate"), {"code": "000000"})
    assert response.status_code == 200
    assert not _in_admin(client)

    response = client.post(reverse("mfa_authenticate"), {"code": totp(secret, time.time() + 30)})
    assert response.status_code == 302
    assert _in_admin(client)


def test_the_admin_sends_a_signed_out_visitor_to_the_sign_in_and_back(client, charlie):
    response = client.get(ACCOUNTS)
    assert response.status_code == 302
    response = client.get(response.url)  # /admin/login/?next=…
    assert response.status_code == 302
    assert response.url == f"{reverse('account_login')}?next={ACCOUNTS}"


def test_staff_without_a_second_factor_are_sent_to_set_one_up(client, charlie):
    log_in(client, charlie)
    assert client.get("/billing/").status_code == 200  # their own console works
    response = client.get(ACCOUNTS, follow=True)
    # Setting one up asks for the password again first (allauth's rule).
    assert [url for url, _ in response.redirect_chain][-2:] == [
        reverse("mfa_activate_totp"),
        f"{reverse('account_reauthenticate')}?next=%2Faccounts%2F2fa%2Ftotp%2Factivate%2F",
    ]
    assert "needs two-factor sign-in" in response.content.decode()
    assert not _in_admin(client)


def test_staff_who_set_up_totp_in_this_session_confirm_a_code_first(client, charlie):
    log_in(client, charlie)
    secret = activate_totp(client)
    response = client.get(ACCOUNTS, follow=True)
    assert response.redirect_chain[-1][0].startswith(reverse("mfa_reauthenticate"))
    assert not _in_admin(client)
    response = client.post(
        f"{reverse('mfa_reauthenticate')}?next={ACCOUNTS}",
        {"code": totp(secret, time.time() + 30)},
    )
    assert response.status_code == 302 and response.url == ACCOUNTS
    assert _in_admin(client)


def test_a_customer_signed_in_is_refused_not_asked_to_sign_in_again(alice_client):
    assert alice_client.get("/admin/login/").status_code == 403
    assert alice_client.get(ACCOUNTS).status_code == 302


def test_the_requirement_can_be_switched_off_for_development(settings, client, charlie):
    settings.STAFF_MFA_REQUIRED = False
    log_in(client, charlie)
    assert _in_admin(client)


def test_the_admin_login_gives_a_guesser_nothing_to_count_on(settings, charlie):
    # Guesses at /admin/login/ sign no one in, the right password included.
    guesser = Client()
    for password in [WRONG] * 30 + [PASSWORD]:
        guesser.post("/admin/login/", {"username": charlie.email, "password": password})
    assert "_auth_user_id" not in guesser.session
    # The only password form, allauth's, locks the account's sign-in after a few failures.
    per_email = _limit(settings.ACCOUNT_RATE_LIMITS, "login_failed")["key"]
    for _ in range(per_email):
        guesser.post(reverse("account_login"), {"login": charlie.email, "password": WRONG})
    response = Client().post(
        reverse("account_login"), {"login": charlie.email, "password": PASSWORD}
    )
    assert LOGIN_REFUSED in response.content.decode()


def test_guessing_the_code_at_sign_in_is_locked_out(charlie):
    client = Client()
    log_in(client, charlie)
    secret = activate_totp(client)
    client.post(reverse("account_logout"))
    log_in(client, charlie)
    for _ in range(5):
        client.post(reverse("mfa_authenticate"), {"code": "000000"})
    response = client.post(reverse("mfa_authenticate"), {"code": totp(secret, time.time() + 30)})
    assert "Too many" in response.content.decode()
    assert not _in_admin(client)


def test_guessing_the_code_to_reenter_the_admin_is_locked_out(charlie):
    client = Client()
    log_in(client, charlie)
    secret = activate_totp(client)
    for _ in range(5):
        client.post(reverse("mfa_reauthenticate"), {"code": "000000"})
    response = client.post(reverse("mfa_reauthenticate"), {"code": totp(secret, time.time() + 30)})
    assert "Too many" in response.content.decode()
    assert not _in_admin(client)


def test_guessing_the_password_to_reauthenticate_is_limited(charlie):
    client = Client()
    log_in(client, charlie)
    for _ in range(10):
        client.post(reverse("account_reauthenticate"), {"password": WRONG})
    response = client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    assert response.status_code == 429 or "Too many" in response.content.decode()


def test_staff_pages_outside_the_admin_need_the_second_factor_too(
    charlie, alice_client, tmp_path, settings
):
    from console.announcements.models import Announcement
    from console.support.models import TicketAttachment
    from tests.conftest import _client_for
    from tests.support.test_tickets import open_ticket, png

    settings.MEDIA_ROOT = tmp_path
    open_ticket(alice_client, attachments=[png()])
    attachment = reverse("console:ticket_attachment", args=[TicketAttachment.objects.get().pk])
    draft = reverse(
        "console:announcement", args=[Announcement.objects.create(title="Soon", body="…").pk]
    )
    platform = reverse("logs:staff")

    password_only = _client_for(charlie)
    assert password_only.get(platform).url.startswith(f"/admin/login/?next={platform}")
    assert password_only.get(attachment).status_code == 404
    assert password_only.get(draft).status_code == 404

    with_code = staff_client_for(charlie)
    assert with_code.get(platform).status_code == 200
    assert with_code.get(attachment).status_code == 200
    assert with_code.get(draft).status_code == 200
