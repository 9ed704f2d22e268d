"""Guessing is rate-limited: passwords, sign-ups, password resets, redemption codes and tickets.
The counters live in the configured cache (in process here, Redis in production and CI); the
tests lower a limit only where the code reads it per request."""

from django.core import mail
from django.test import Client
from django.urls import reverse

from tests.conftest import PASSWORD, balance_of, make_user

WRONG = "not-the-password-1"
LOGIN_REFUSED = "Too many failed login attempts. Try again later."
LOGIN_WRONG = "The email address and/or password you specified are not correct."


def _login(client, email, password):
    return client.post(reverse("account_login"), {"login": email, "password": password})


def _signed_in(client):
    return "_auth_user_id" in client.session


def _limit(rates, action):
    """The per-key (or per-ip) count of allauth's rate for `action`, from settings."""
    return {
        rate.split("/")[-1] if rate.count("/") == 2 else "ip": int(rate.split("/")[0])
        for rate in rates[action].split(",")
    }


def test_failed_logins_for_one_email_are_limited(settings, alice, bob):
    per_email = _limit(settings.ACCOUNT_RATE_LIMITS, "login_failed")["key"]
    client = Client()
    for attempt in range(per_email):
        response = _login(client, "alice@example.com", WRONG)
        assert response.status_code == 200, attempt
        assert LOGIN_WRONG in response.content.decode(), attempt
        assert LOGIN_REFUSED not in response.content.decode(), attempt

    # The right password no longer helps: the guesser cannot tell that it was right.
    victim = Client()
    response = _login(victim, "alice@example.com", PASSWORD)
    assert response.status_code == 200
    assert LOGIN_REFUSED in response.content.decode()
    assert not _signed_in(victim)
    # Nor does changing the case of the address.
    response = _login(Client(), "ALICE@Example.com", PASSWORD)
    assert LOGIN_REFUSED in response.content.decode()

    # Another account, from the same address, still signs in.
    other = Client()
    response = _login(other, "bob@example.com", PASSWORD)
    assert response.status_code == 302 and _signed_in(other)


def test_failed_logins_from_one_address_are_limited(settings, bob, db):
    per_ip = _limit(settings.ACCOUNT_RATE_LIMITS, "login_failed")["ip"]
    client = Client()
    for attempt in range(per_ip):
        # A made-up X-Forwarded-For does not make the guesser someone else.
        client.defaults["HTTP_X_FORWARDED_FOR"] = f"203.0.113.{attempt}"
        response = _login(client, f"guess{attempt}@example.com", WRONG)
        assert LOGIN_WRONG in response.content.decode(), attempt
    response = _login(client, "bob@example.com", PASSWORD)
    assert response.status_code == 200
    assert LOGIN_REFUSED in response.content.decode()
    assert not _signed_in(client)
    # Another address is not affected.
    response = _login(Client(REMOTE_ADDR="192.0.2.10"), "bob@example.com", PASSWORD)
    assert response.status_code == 302


def test_a_successful_login_does_not_use_up_the_limit(settings, alice):
    per_email = _limit(settings.ACCOUNT_RATE_LIMITS, "login_failed")["key"]
    for _ in range(per_email + 2):
        client = Client()
        assert _login(client, "alice@example.com", PASSWORD).status_code == 302
        assert _signed_in(client)


def test_signups_from_one_address_are_limited(settings, db):
    from accounts.models import User

    settings.ACCOUNT_RATE_LIMITS = {**settings.ACCOUNT_RATE_LIMITS, "signup": "3/m/ip"}
    client = Client()
    for n in range(3):
        response = client.post(
            reverse("account_signup"),
            {"email": f"new{n}@example.com", "password1": PASSWORD, "password2": PASSWORD},
        )
        assert response.status_code == 302, n
        client.logout()
    assert User.objects.count() == 3

    response = client.post(
        reverse("account_signup"),
        {"email": "new9@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 429
    assert "Wait a few minutes, then try again." in response.content.decode()
    assert not User.objects.filter(email="new9@example.com").exists()


def test_allauth_enforces_a_limit_on_every_guessable_action():
    from allauth.account import app_settings

    rates = app_settings.RATE_LIMITS  # what allauth reads on each request
    for action in (
        "login_failed",
        "signup",
        "reset_password",
        "reset_password_from_key",
        "confirm_email",
        "change_password",
    ):
        assert rates.get(action), f"allauth has no rate limit for {action}"


def test_password_reset_requests_are_limited_per_email(
    settings, alice, bob, django_capture_on_commit_callbacks
):
    per_email = _limit(settings.ACCOUNT_RATE_LIMITS, "reset_password")["key"]
    url = reverse("account_reset_password")
    client = Client()

    def ask(email):
        # The email leaves when the request's transaction commits.
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(url, {"email": email})

    for attempt in range(per_email):
        assert ask("alice@example.com").status_code == 302, attempt
    assert len(mail.outbox) == per_email
    assert all(message.to == ["alice@example.com"] for message in mail.outbox)

    response = ask("alice@example.com")
    assert response.status_code == 429
    assert "Wait a few minutes, then try again." in response.content.decode()
    assert len(mail.outbox) == per_email

    # Someone else's reset still goes out.
    assert ask("bob@example.com").status_code == 302
    assert mail.outbox[-1].to == ["bob@example.com"]


def test_password_reset_requests_are_limited_per_address(settings, db):
    settings.ACCOUNT_RATE_LIMITS = {
        **settings.ACCOUNT_RATE_LIMITS,
        "reset_password": "3/m/ip,5/m/key",
    }
    url = reverse("account_reset_password")
    client = Client()
    for n in range(3):
        assert client.post(url, {"email": f"who{n}@example.com"}).status_code == 302
    assert client.post(url, {"email": "who9@example.com"}).status_code == 429


def _codes(charlie, count):
    from billing import services

    _batch, text = services.redemption_batch_create(
        name="promo", amount=1_000_000, count=count, expires_at=None, staff_user=charlie
    )
    return [line.split(",")[0] for line in text.splitlines()[1:]]


def _redeem(client, code):
    """(where the user ends up, the page's text) after one attempt."""
    response = client.post(reverse("billing:redeem"), {"code": code}, follow=True)
    assert response.status_code == 200
    return response.redirect_chain[-1][0], response.content.decode()


def test_redemption_code_attempts_are_limited_per_user(
    settings, alice, alice_client, bob, bob_client, charlie
):
    from billing.models import RedemptionCode

    settings.REDEEM_ATTEMPTS = (3, 600)
    good, later, bobs = _codes(charlie, 3)
    recharge, balance = reverse("billing:recharge"), reverse("billing:balance")
    refused = "Too many code attempts. Wait 10 minutes, then try again."

    for _ in range(2):
        where, page = _redeem(alice_client, "AAAA-BBBB-CCCC-DDDD")
        assert where == recharge
        assert "That code does not exist. Check it for typos." in page
        assert refused not in page
    where, page = _redeem(alice_client, good)
    assert where == balance and "Code redeemed: $1.00 added to your balance." in page
    assert balance_of(alice) == 1_000_000

    # The fourth attempt is refused, even with a good code, and nothing is credited.
    where, page = _redeem(alice_client, later)
    assert where == recharge and refused in page
    assert balance_of(alice) == 1_000_000
    assert RedemptionCode.objects.filter(redeemed_at__isnull=True).count() == 2

    # Bob has his own count.
    where, page = _redeem(bob_client, bobs)
    assert where == balance
    assert balance_of(bob) == 1_000_000


def _open_ticket(client, subject):
    return client.post(
        reverse("console:ticket_new"),
        {"category": "other", "subject": subject, "message": "Hello."},
    )


def test_new_tickets_are_limited_per_hour(settings, alice, alice_client, bob_client):
    from console.support.models import Ticket

    settings.TICKETS_PER_HOUR = 2
    for n in range(2):
        response = _open_ticket(alice_client, f"Question {n}")
        assert response.status_code == 302, n
    assert Ticket.objects.filter(user=alice).count() == 2

    response = _open_ticket(alice_client, "One too many")
    assert response.status_code == 200
    assert (
        "You opened 2 tickets in the last hour. Add to one of them, or try again later."
        in response.content.decode()
    )
    assert Ticket.objects.filter(user=alice).count() == 2

    assert _open_ticket(bob_client, "Bob's question").status_code == 302


def test_the_ticket_limit_does_not_count_forms_sent_back_with_errors(settings, alice_client):
    settings.TICKETS_PER_HOUR = 1
    for _ in range(3):
        response = alice_client.post(reverse("console:ticket_new"), {"category": "other"})
        assert response.status_code == 200
    assert _open_ticket(alice_client, "Finally").status_code == 302


def test_a_new_user_starts_with_a_fresh_count(settings, db):
    settings.TICKETS_PER_HOUR = 1
    users = [make_user(f"u{n}@example.com") for n in range(2)]
    for user in users:
        client = Client()
        client.force_login(user)
        assert _open_ticket(client, "Hello").status_code == 302
