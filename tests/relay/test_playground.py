"""The console's playground: a signed-in user's chat through one of their own tokens goes through
the gateway, and is authorised, held, billed and logged as an API request with that token."""

import json

import httpx
import pytest
from django.test import Client

from billing.models import LedgerEntry
from logs.models import RequestLog
from tests.conftest import balance_and_ledger
from tests.relay.conftest import wait_until
from tokens.services import token_create

CHAT = "/playground/chat/"
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]


def session_for(user, site):
    """An HTTP client signed in as `user` on the live site, and the CSRF token its pages carry."""
    client = Client()
    client.force_login(user)
    http = httpx.Client(base_url=site.url, cookies={"sessionid": client.cookies["sessionid"].value})
    assert http.get("/playground/").status_code == 200
    return http, http.cookies["csrftoken"]


def chat(http, csrf, token, messages=HELLO, model="gpt-4o-mini", **headers):
    if csrf:
        headers["X-CSRFToken"] = csrf
    return http.post(
        CHAT,
        json={"token": token.pk, "model": model, "messages": messages},
        headers={"Referer": str(http.base_url) + "/playground/", **headers},
    )


def events(response):
    """The JSON chunks of a server-sent event stream."""
    lines = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


def test_a_playground_chat_is_streamed_billed_and_logged_like_an_api_call(
    live_site, token_and_key, channel, alice
):
    token, _key = token_and_key
    http, csrf = session_for(alice, live_site)
    before, _ = balance_and_ledger(alice)

    response = chat(http, csrf, token)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = events(response)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text
    log = wait_until(lambda: RequestLog.objects.filter(token=token).first(), message="the log row")
    assert str(log.id) == response.headers["x-request-id"]
    assert (log.user_id, log.endpoint, log.model, log.stream) == (
        alice.pk,
        "chat",
        "gpt-4o-mini",
        True,
    )
    assert log.status == 200 and log.cost > 0
    assert chunks[-1]["usage"]["cost"] == log.cost / 1_000_000  # what the page shows
    wait_until(lambda: balance_and_ledger(alice) == (before - log.cost,) * 2, message="the charge")
    assert LedgerEntry.objects.filter(account__user=alice, kind=LedgerEntry.Kind.USAGE).exists()


def test_the_upstream_receives_the_conversation_as_the_user_wrote_it(
    live_site, token_and_key, channel, upstream, alice
):
    token, _key = token_and_key
    http, csrf = session_for(alice, live_site)
    turns = [*HELLO, {"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "Again"}]

    assert chat(http, csrf, token, turns).status_code == 200

    sent = upstream.received[-1]["payload"]
    assert sent["messages"] == turns and sent["stream"] is True


def test_bob_cannot_use_alices_token(live_site, token_and_key, channel, bob):
    token, _key = token_and_key
    http, csrf = session_for(bob, live_site)

    response = chat(http, csrf, token)

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "No such token."
    assert not RequestLog.objects.exists()


def test_a_chat_needs_the_csrf_token(live_site, token_and_key, channel, alice):
    token, _key = token_and_key
    http, _csrf = session_for(alice, live_site)

    response = chat(http, None, token)

    assert response.status_code == 403
    assert not RequestLog.objects.exists()


def test_a_signed_out_visitor_is_refused(live_site, token_and_key, channel):
    token, _key = token_and_key
    http = httpx.Client(base_url=live_site.url)
    csrf = http.get("/accounts/login/").cookies["csrftoken"]

    response = chat(http, csrf, token)

    assert response.status_code == 401
    assert "sign in" in response.json()["error"]["message"]


def test_a_chat_needs_a_message_of_the_users(live_site, token_and_key, alice):
    token, _key = token_and_key
    http, csrf = session_for(alice, live_site)

    response = chat(http, csrf, token, [{"role": "system", "content": "Be brief."}])

    assert response.status_code == 400
    assert "write one first" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"allowed_models": ["text-embedding-3-small"]}, 403, "may not call “gpt-4o-mini”"),
        ({"unlimited_quota": False, "quota_limit": 1}, 429, "has used up its own quota"),
    ],
)
def test_the_gateways_refusal_of_the_token_is_shown_word_for_word(
    live_site, funded, default_line, channel, fields, status, says
):
    token, _key = token_create(
        user=funded, name="narrow", line=default_line, notify=False, **fields
    )
    http, csrf = session_for(funded, live_site)

    response = chat(http, csrf, token)

    assert response.status_code == status
    message = response.json()["error"]["message"]
    assert says in message and "“narrow”" in message


def test_a_user_without_money_is_told_so(live_site, alice, default_line, channel):
    token, _key = token_create(user=alice, name="broke", line=default_line, notify=False)
    http, csrf = session_for(alice, live_site)

    response = chat(http, csrf, token)

    assert response.status_code == 429
    assert "balance" in response.json()["error"]["message"].lower()
