"""Limits hold when the requests arrive together: twenty posts released at the same instant
from twenty threads (each with its own database connection, the cache shared as in production)
get exactly as far as the limit allows."""

import threading

from django.db import connection
from django.test import Client
from django.urls import reverse

from console.support.models import Ticket
from tests.conftest import PASSWORD, make_user
from tests.security.test_rate_limits import LOGIN_REFUSED, LOGIN_WRONG, WRONG, _limit
from tests.support.test_tickets import png
from tokens.models import Token

TOGETHER = 20


def _all_at_once(client_for, send):
    """Runs send(client) in TOGETHER threads released together; returns their responses."""
    clients = [client_for() for _ in range(TOGETHER)]
    start = threading.Barrier(TOGETHER)
    answers = [None] * TOGETHER

    def run(n):
        try:
            start.wait()
            answers[n] = send(clients[n])
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(TOGETHER)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def _signed_in(user):
    def make():
        client = Client()
        client.force_login(user)
        return client

    return make


def test_simultaneous_new_tickets_never_exceed_the_limit(settings, transactional_db, tmp_path):
    settings.TICKETS_PER_HOUR = 5
    settings.MEDIA_ROOT = tmp_path
    # A photo each, as people attach them: reading it keeps every post in the form's checks a
    # while, which is where the posts of a check-then-count limit overtake each other. Three
    # people in turn, since threads interleave differently each time.
    for n in range(3):
        user = make_user(f"burst{n}@example.com")
        answers = _all_at_once(
            _signed_in(user),
            lambda client: client.post(
                reverse("console:ticket_new"),
                {
                    "category": "other",
                    "subject": "At once",
                    "message": "Hello.",
                    "attachments": png(size=(1200, 900)),
                },
            ),
        )
        assert Ticket.objects.filter(user=user).count() == 5
        assert sorted(a.status_code for a in answers) == [200] * 15 + [302] * 5
        refused = [a for a in answers if a.status_code == 200]
        assert all(b"You opened 5 tickets in the last hour" in a.content for a in refused)


def test_simultaneous_replies_never_exceed_the_limit(settings, transactional_db, alice):
    settings.TICKET_REPLIES_PER_HOUR = 4
    client = _signed_in(alice)()
    client.post(
        reverse("console:ticket_new"),
        {"category": "other", "subject": "Thread", "message": "First."},
    )
    ticket = Ticket.objects.get(user=alice)
    url = reverse("console:ticket_reply", args=[ticket.number])
    _all_at_once(_signed_in(alice), lambda client: client.post(url, {"message": "Again."}))
    assert ticket.messages.filter(author=alice).count() == 1 + 4


def test_simultaneous_new_keys_never_exceed_the_limit(
    settings, transactional_db, alice, default_line
):
    settings.TOKENS_PER_HOUR = 3
    answers = _all_at_once(
        _signed_in(alice),
        lambda client: client.post(
            reverse("tokens:create"),
            {"name": "burst", "unlimited_quota": "on", "line": default_line.pk},
        ),
    )
    assert Token.objects.filter(user=alice).count() == 3
    refused = [a for a in answers if b"You made 3 keys in the last hour" in a.content]
    assert len(refused) == TOGETHER - 3


def test_simultaneous_password_guesses_get_no_more_tries_than_the_limit(
    settings, transactional_db, alice
):
    per_email = _limit(settings.ACCOUNT_RATE_LIMITS, "login_failed")["key"]
    answers = _all_at_once(
        Client,
        lambda client: client.post(
            reverse("account_login"), {"login": alice.email, "password": WRONG}
        ),
    )
    # Only an answer that the password is wrong means the password was tried; the others are
    # refusals (the lockout message, or a 429 when the limit's own lock was busy).
    checked = [a for a in answers if LOGIN_WRONG in a.content.decode()]
    assert 1 <= len(checked) <= per_email
    response = Client().post(reverse("account_login"), {"login": alice.email, "password": PASSWORD})
    assert LOGIN_REFUSED in response.content.decode()
