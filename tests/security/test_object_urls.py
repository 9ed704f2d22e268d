"""Every object URL is scoped to its owner: the matrix is generated from the URLconf, so a new
parameterised view fails here until it is added to OWNED or PUBLIC (tests/security/urls.py)."""

import pytest
from django.forms.models import model_to_dict
from django.test import Client
from django.urls import reverse

from tests.conftest import streamed
from tests.security.urls import (
    ALICE_IP,
    ALICE_TICKET_SUBJECT,
    ALICE_TOKEN_NAME,
    OWNED,
    PUBLIC,
    make_attachment,
    make_log,
    make_order,
    make_ticket,
    make_token,
    parameterised_project_routes,
    unsubscribe_token,
)


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    # The sandbox's pay page exists only while the sandbox is on; off, it is 404 for everyone
    # and would prove nothing.
    settings.PAYMENTS_SANDBOX = True


def test_every_parameterised_url_is_in_the_matrix_or_public():
    routes = parameterised_project_routes()
    assert routes, "the URLconf walk found no parameterised project URL"
    unnamed = [route.route for route in routes if not route.name]
    assert not unnamed, f"name these URL patterns so that the matrix can list them: {unnamed}"
    names = {route.name for route in routes}
    missing = sorted(names - OWNED.keys() - PUBLIC.keys())
    assert not missing, "\n".join(
        f"add {name} to the matrix: OWNED (another user's object answers 404) or PUBLIC "
        "(with the reason) in tests/security/urls.py"
        for name in missing
    )
    both = sorted(OWNED.keys() & PUBLIC.keys())
    assert not both, f"these URLs are both owned and public: {both}"
    stale = sorted((OWNED.keys() | PUBLIC.keys()) - names)
    assert not stale, f"these names are no longer parameterised project URLs: {stale}"


def _world():
    """What bob could have changed of alice's: every row of the owned models."""
    from billing.models import LedgerEntry, RechargeOrder
    from console.support.models import Ticket, TicketAttachment, TicketMessage
    from logs.models import RequestLog
    from tokens.models import Token

    return {
        model.__name__: sorted(
            (sorted(model_to_dict(row).items(), key=str) for row in model.objects.all()), key=str
        )
        for model in (
            Token,
            Ticket,
            TicketMessage,
            TicketAttachment,
            RechargeOrder,
            LedgerEntry,
            RequestLog,
        )
    }


HIJACK = {
    "message": "hijack",
    "name": "hijacked",
    "line": "default",
    "unlimited_quota": "on",
    "outcome": "ok",
    "next": "/",
}


def _identifiers(kwargs):
    return [str(value) for value in kwargs.values() if len(str(value)) > 3]


def _made_up(kwargs):
    """The same kwargs naming an object that does not exist."""
    return {
        key: 999_999_999
        if isinstance(value, int)
        else "00000000-0000-7000-8000-000000000000"
        if key == "request_id"
        else "X-NOTHING"
        for key, value in kwargs.items()
    }


@pytest.mark.parametrize("name", sorted(OWNED))
def test_another_users_object_answers_404(name, alice, bob, alice_client, bob_client):
    kwargs = OWNED[name](alice)
    url = reverse(name, kwargs=kwargs)
    before = _world()

    # A visitor who is not signed in is sent to sign in, and never sees the object.
    login = reverse("account_login")
    for method in ("get", "post"):
        response = getattr(Client(), method)(url, HIJACK if method == "post" else {})
        assert response.status_code in (302, 404), f"anonymous {method.upper()} {url}"
        if response.status_code == 302:
            assert response.url.startswith(login), f"anonymous {method.upper()} {url}"
        body = response.content.decode(errors="replace")
        assert not any(value in body for value in _identifiers(kwargs)), url

    # Bob, signed in, gets 404 whatever the method, and changes nothing of alice's.
    get = bob_client.get(url)
    if get.status_code == 405:
        # A POST-only view refuses GET before looking anything up: the same answer as for an
        # object that does not exist, so it tells bob nothing.
        nothing = reverse(name, kwargs=_made_up(kwargs))
        assert bob_client.get(nothing).status_code == 405, f"bob GET {url} answered 405"
    else:
        assert get.status_code == 404, f"bob GET {url} answered {get.status_code}"
    post = bob_client.post(url, HIJACK)
    assert post.status_code == 404, f"bob POST {url} answered {post.status_code}"
    htmx = bob_client.post(url, HIJACK, headers={"HX-Request": "true"})
    assert htmx.status_code == 404, f"bob htmx POST {url} answered {htmx.status_code}"
    assert _world() == before, f"bob's requests to {url} changed alice's data"

    # Alice reaches it: the mapping names a real object of hers.
    mine = alice_client.get(url)
    assert mine.status_code in (200, 302, 405), f"alice GET {url} answered {mine.status_code}"
    if mine.status_code == 405:  # POST only: the object lookup is behind the method check
        mine = alice_client.post(url, {"message": "Mine."})
        assert mine.status_code in (200, 302), f"alice POST {url} answered {mine.status_code}"


def test_staff_reach_the_users_ticket_files_but_bob_does_not(alice, bob_client, staff_client):
    attachment = make_attachment(alice)
    url = reverse("console:ticket_attachment", args=[attachment.pk])
    assert staff_client.get(url).status_code == 200
    assert bob_client.get(url).status_code == 404


def test_bobs_pages_show_nothing_of_alices(alice, bob, bob_client):
    token = make_token(alice)
    log = make_log(alice, token)
    order = make_order(alice)
    ticket = make_ticket(alice)
    secrets = {
        "token name": ALICE_TOKEN_NAME,
        "key prefix": token.key_prefix,
        "order number": order.number,
        "ticket number": ticket.number,
        "ticket subject": ALICE_TICKET_SUBJECT,
        "request id": str(log.pk),
        "client IP": ALICE_IP,
    }
    pages = [
        reverse("console:dashboard"),
        reverse("console:dashboard") + f"?token={token.pk}",
        reverse("console:dashboard_live") + f"?token={token.pk}",
        reverse("console:tickets"),
        reverse("console:ticket_new"),
        reverse("console:ticket_new") + f"?order={order.number}",
        reverse("console:ticket_token_ips") + f"?token={token.pk}",
        reverse("tokens:list"),
        reverse("billing:balance"),
        reverse("billing:recharge"),
        reverse("billing:orders"),
        reverse("logs:list"),
        reverse("logs:list") + f"?token={token.pk}&period=7d",
        reverse("logs:list") + f"?ip={ALICE_IP}&period=7d",
        reverse("logs:ips") + f"?token={token.pk}&period=30d",
        reverse("logs:export") + "?period=7d",
        reverse("logs:export") + f"?token={token.pk}&period=7d",
    ]
    for url in pages:
        response = bob_client.get(url)
        assert response.status_code == 200, f"bob GET {url} answered {response.status_code}"
        body = (streamed(response) if response.streaming else response.content).decode()
        # A filter bob typed himself is echoed back; anything else of alice's must not be.
        shown = [what for what, value in secrets.items() if value in body and value not in url]
        assert not shown, f"bob's {url} shows alice's {', '.join(shown)}"


def test_bob_cannot_file_a_ticket_about_alices_order_or_token(alice, bob, bob_client):
    from console.support.models import Ticket

    order = make_order(alice)
    token = make_token(alice)
    for category, field, value in [("recharge", "order", order.pk), ("charges", "token", token.pk)]:
        response = bob_client.post(
            reverse("console:ticket_new"),
            {"category": category, "subject": "Mine?", "message": "Look.", field: value},
        )
        assert response.status_code == 200, f"a ticket about alice's {field} was accepted"
        assert "Select a valid choice" in response.content.decode()
    assert not Ticket.objects.exists()


def test_a_draft_announcement_is_not_public(alice_client, bob_client):
    from console.announcements.models import Announcement

    draft = Announcement.objects.create(title="Unreleased price cut", body="Soon.")
    for client in (Client(), alice_client, bob_client):
        assert client.get(draft.get_absolute_url()).status_code == 404


def test_a_changed_unsubscribe_link_changes_nothing(alice, bob):
    from accounts.models import NotificationSettings

    prefs = NotificationSettings.of(alice)
    prefs.price_emails = True
    prefs.save()
    token = unsubscribe_token(alice)
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    response = Client().post(reverse("console:unsubscribe", args=[forged]))
    assert response.status_code == 400
    assert NotificationSettings.of(alice).price_emails is True
