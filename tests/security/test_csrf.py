"""Every state-changing request needs the CSRF token: generated from the URLconf, so a new view
is covered the day it is added, and a new @csrf_exempt fails until it is listed with a reason."""

import json
import time

import pytest
from django.test import Client
from django.urls import NoReverseMatch, reverse

from tests.conftest import PASSWORD, staff_client_for
from tests.security.urls import make_order, project_routes, url_for, walk

# Views that take POSTs without a CSRF token, and what protects them instead.
CSRF_EXEMPT = {
    "billing:webhook": "payment providers post server to server; every callback is verified "
    "by its signature and applied once per event id",
    "console:unsubscribe": "one-click unsubscribe (RFC 8058) is posted by mail clients; the "
    "signed link is the credential and it can only turn one kind of email off",
}


def _csrf_client(user=None, page="console:dashboard"):
    """A browser that holds a CSRF cookie (from a page it opened), as an attacker's page
    would find it, but does not send the token."""
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    client.get(reverse(page))
    assert "csrftoken" in client.cookies, f"{page} set no CSRF cookie"
    return client


def _token(client):
    return client.cookies["csrftoken"].value


def _refused(response):
    return response.status_code == 403 and b"CSRF" in response.content


def test_every_csrf_exempt_view_is_listed_with_its_reason():
    exempt = {route.name or route.route for route in walk() if route.csrf_exempt}
    unlisted = sorted(exempt - CSRF_EXEMPT.keys())
    assert not unlisted, "\n".join(
        f"{name} is csrf_exempt: add it to CSRF_EXEMPT in tests/security/test_csrf.py with what "
        "protects it instead, or remove @csrf_exempt"
        for name in unlisted
    )
    stale = sorted(CSRF_EXEMPT.keys() - exempt)
    assert not stale, f"no longer csrf_exempt, remove from CSRF_EXEMPT: {stale}"


PROTECTED = [route for route in project_routes() if route.name not in CSRF_EXEMPT]


@pytest.mark.parametrize("route", PROTECTED, ids=[route.name for route in PROTECTED])
def test_a_post_without_the_token_is_refused(route, alice, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    # Off, the sandbox's pay page answers 404 rather than call our webhook over the network.
    settings.PAYMENTS_SANDBOX = False
    client = _csrf_client(alice)
    url = url_for(route, alice)

    response = client.post(url, {"name": "forged", "message": "forged", "code": "X"})
    assert _refused(response), f"POST {url} without a CSRF token answered {response.status_code}"
    htmx = client.post(url, {"message": "forged"}, headers={"HX-Request": "true"})
    assert _refused(htmx), f"htmx POST {url} without a CSRF token answered {htmx.status_code}"
    forged = client.post(url, {"csrfmiddlewaretoken": "x" * 64, "message": "forged"})
    assert _refused(forged), f"POST {url} with a made-up token answered {forged.status_code}"

    # The page's own requests carry the token (htmx sends it as a header) and get through.
    allowed = client.post(url, {}, headers={"X-CSRFToken": _token(client)})
    assert allowed.status_code != 403, f"POST {url} with its CSRF token was refused"


def test_a_post_from_another_origin_is_refused_even_with_the_token(alice):
    from tests.security.urls import make_token
    from tokens.models import Token

    token = make_token(alice)
    client = _csrf_client(alice)
    url = reverse("tokens:delete", args=[token.pk])
    response = client.post(
        url,
        {"csrfmiddlewaretoken": _token(client)},
        headers={"Origin": "https://evil.example"},
    )
    assert _refused(response)
    assert Token.objects.alive().filter(pk=token.pk).exists()


SIGN_IN_FORMS = [
    ("account_login", {"login": "alice@example.com", "password": PASSWORD}),
    (
        "account_signup",
        {"email": "mallory@example.com", "password1": PASSWORD, "password2": PASSWORD},
    ),
    ("account_reset_password", {"email": "alice@example.com"}),
]


@pytest.mark.parametrize(("name", "data"), SIGN_IN_FORMS, ids=[n for n, _ in SIGN_IN_FORMS])
def test_sign_in_forms_need_the_token(name, data, alice, charlie):
    from accounts.models import User

    client = _csrf_client(page=name)
    users = User.objects.count()
    response = client.post(reverse(name), data)
    assert _refused(response), f"{name} without a CSRF token answered {response.status_code}"
    assert "_auth_user_id" not in client.session
    assert User.objects.count() == users

    allowed = client.post(reverse(name), {**data, "csrfmiddlewaretoken": _token(client)})
    assert allowed.status_code in (200, 302), f"{name} with its token: {allowed.status_code}"


def test_a_link_cannot_sign_a_user_out(alice_client):
    page = alice_client.get(reverse("account_logout"))
    assert page.status_code == 200  # a page asking to confirm, with a form that POSTs
    assert "_auth_user_id" in alice_client.session


def _dummy_url(route):
    kwargs = {param: "1" if param == "uidb36" else "abc-def" for param in route.params}
    try:
        return reverse(route.name, kwargs=kwargs) if kwargs else reverse(route.name)
    except NoReverseMatch:
        return None


ACCOUNT_ROUTES = [route for route in walk() if route.is_allauth and route.name]


@pytest.mark.parametrize("route", ACCOUNT_ROUTES, ids=[route.name for route in ACCOUNT_ROUTES])
def test_every_account_page_refuses_a_post_without_the_token(route, alice):
    url = _dummy_url(route)
    assert url, f"could not build a URL for {route.name} ({route.route})"
    for client in (_csrf_client(page="account_login"), _csrf_client(alice)):
        response = client.post(url, {"email": "mallory@example.com", "password": "x"})
        assert _refused(response), f"POST {url} without a token: {response.status_code}"


ADMIN_ROUTES = [route for route in walk() if route.is_admin and route.name and not route.params]


def test_the_admin_refuses_posts_without_the_token(charlie):
    client = staff_client_for(charlie)
    client.handler.enforce_csrf_checks = True
    client.get(reverse("admin:index"))
    assert "csrftoken" in client.cookies
    for route in ADMIN_ROUTES:
        url = reverse(route.name)
        response = client.post(url, {"name": "forged"})
        assert _refused(response), f"POST {url} without a token: {response.status_code}"


def test_the_webhook_refuses_an_unsigned_callback(alice, settings):
    from billing.models import RechargeOrder

    settings.PAYMENTS_SANDBOX = True
    order = make_order(alice)
    body = json.dumps(
        {
            "id": "evt_forged",
            "type": "payment.succeeded",
            "order": order.number,
            "amount": order.amount,
            "currency": "usd",
        }
    )
    url = reverse("billing:webhook", args=["sandbox"])
    for signature in ("", f"t={int(time.time())},v1={'0' * 64}"):
        response = Client(enforce_csrf_checks=True).post(
            url,
            body,
            content_type="application/json",
            headers={"X-Sandbox-Signature": signature} if signature else {},
        )
        assert response.status_code == 400, response.content
    order.refresh_from_db()
    assert order.status == RechargeOrder.Status.PENDING
