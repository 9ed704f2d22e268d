"""Every error a program can meet, as the official client raises it, with our message."""

from datetime import timedelta

import httpx
import openai
import pytest
from django.utils import timezone

from billing import services
from billing.models import LedgerEntry, Line, LineGrant
from logs.models import RequestLog
from relay.models import Channel
from relay.recording import UNKNOWN_MODEL
from tests.relay.conftest import make_channel, wait_until
from tokens.models import Token
from tokens.services import token_create, token_set_enabled, token_update

HELLO = [{"role": "user", "content": "Hello"}]
HELLO_BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]'


def chat(api, **extra):
    return api.chat.completions.create(
        model=extra.pop("model", "gpt-4o-mini"), messages=HELLO, **extra
    )


def error_of(raised):
    return raised.value.body, raised.value.status_code


def test_a_missing_key_says_how_to_send_one(live_site, channel):
    response = httpx.post(f"{live_site.url}/v1/chat/completions", json={})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert "Authorization: Bearer sk-" in error["message"]
    assert response.headers["x-request-id"]


@pytest.mark.parametrize("key", ["sk-typo", "sk-" + "a" * 49, "not-even-a-key"])
def test_an_unknown_key_names_the_base_url_and_the_help(live_site, channel, settings, key):
    client = openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        chat(client)
    body, _status = error_of(raised)
    assert body["code"] == "invalid_api_key"
    assert f"{settings.SITE_URL}/v1" in body["message"]
    assert "/help/#invalid-token" in body["message"]


def test_a_disabled_token_is_named(api, token_and_key):
    token, _key = token_and_key
    token_set_enabled(token=token, enabled=False)
    with pytest.raises(openai.PermissionDeniedError) as raised:
        chat(api)
    assert error_of(raised)[0]["code"] == "token_disabled"
    assert "“backend” is disabled" in error_of(raised)[0]["message"]
    token_set_enabled(token=token, enabled=True)
    assert chat(api).choices  # takes effect at once both ways


def test_an_expired_token(api, token_and_key):
    token, _key = token_and_key
    token.expires_at = timezone.now() - timedelta(seconds=1)
    token_update(token=token)
    with pytest.raises(openai.PermissionDeniedError) as raised:
        chat(api)
    assert error_of(raised)[0]["code"] == "token_expired"


def test_an_ip_outside_the_allowlist_is_told_which_ip_we_saw(api, token_and_key):
    token, _key = token_and_key
    token.ip_allowlist = ["203.0.113.0/24"]
    token_update(token=token)
    with pytest.raises(openai.PermissionDeniedError) as raised:
        chat(api)
    body, _ = error_of(raised)
    assert body["code"] == "ip_not_allowed"
    assert "does not allow requests from 127.0.0.1" in body["message"]
    token.ip_allowlist = ["127.0.0.0/8"]
    token_update(token=token)
    assert chat(api).choices


def test_a_model_the_token_may_not_call(api, token_and_key):
    token, _key = token_and_key
    token.allowed_models = ["text-embedding-3-small"]
    token_update(token=token)
    with pytest.raises(openai.PermissionDeniedError) as raised:
        chat(api)
    body, _ = error_of(raised)
    assert (body["code"], body["param"]) == ("model_not_allowed", "model")


def test_a_model_not_served_on_the_tokens_line(api, upstream, funded):
    from billing.models import ModelPrice

    ModelPrice.objects.create(model="gpt-4o", vendor="OpenAI")
    vip = Line.objects.create(name="vip")
    make_channel(upstream, "vip only", models=["gpt-4o"], lines=("vip",))
    with pytest.raises(openai.PermissionDeniedError) as raised:
        chat(api, model="gpt-4o")
    assert "not served on the line “default”" in error_of(raised)[0]["message"]
    assert vip


def test_a_line_no_longer_granted(live_site, funded, channel):
    training = Line.objects.create(name="training", requires_grant=True)
    channel.lines.add(training)
    grant = LineGrant.objects.create(line=training, user=funded)
    _token, key = token_create(user=funded, name="batch", line=training, notify=False)
    client = openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)
    assert chat(client).choices
    grant.delete()
    with pytest.raises(openai.PermissionDeniedError) as raised:
        chat(client)
    assert error_of(raised)[0]["code"] == "group_not_granted"


def test_an_unknown_model_points_at_the_model_list(api):
    with pytest.raises(openai.NotFoundError) as raised:
        chat(api, model="gpt-9")
    body, _ = error_of(raised)
    assert body["code"] == "model_not_found"
    assert "/v1/models" in body["message"]


def test_insufficient_balance_is_429_with_the_recharge_link(
    live_site, alice, channel, default_line
):
    _token, key = token_create(user=alice, name="empty", line=default_line, notify=False)
    client = openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as raised:
        chat(client)
    body, status = error_of(raised)
    assert (status, body["code"], body["type"]) == (429, "insufficient_quota", "insufficient_quota")
    assert "/billing/recharge/" in body["message"]
    assert raised.value.response.headers["x-should-retry"] == "false"


def test_a_used_up_token_quota_is_named_while_the_balance_has_money(api, token_and_key, alice):
    token, _key = token_and_key
    Token.objects.filter(pk=token.pk).update(
        unlimited_quota=False, quota_limit=1_000, quota_used=1_000
    )
    token_update(token=Token.objects.get(pk=token.pk))
    with pytest.raises(openai.RateLimitError) as raised:
        chat(api)
    body, _ = error_of(raised)
    assert body["code"] == "token_quota_exceeded"
    assert "“backend” has used up its own quota" in body["message"]
    assert "set it to unlimited quota" in body["message"]


@pytest.mark.parametrize(
    ("content", "param", "text"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "must be an object"),
        (b"", None, "the body is empty"),
        (b'{"messages": []}', "model", "'model' is required"),
        (b'{"model": "gpt-4o-mini"}', "messages", "'messages' is required"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', "messages", "must be a list"),
        (b'{"model": "gpt-4o-mini", "messages": [], "max_tokens": -1}', "messages", "required"),
        (
            b'{"model": "gpt-4o-mini", "messages": [{}], "max_tokens": "many"}',
            "max_tokens",
            "positive whole number",
        ),
        (b'{"model": "gpt-4o-mini", "messages": [{}], "stream": "yes"}', "stream", "true or false"),
        (HELLO_BODY + b', "n": "3"}', "n", "whole number from 1 to 128"),
        (HELLO_BODY + b', "n": 3.0}', "n", "whole number from 1 to 128"),
        (HELLO_BODY + b', "n": 500}', "n", "whole number from 1 to 128"),
        (b"\xff\xfe{}", None, "not UTF-8"),
    ],
)
def test_bad_requests_are_400_with_the_field(
    live_site, token_and_key, channel, content, param, text
):
    _token, key = token_and_key
    response = httpx.post(
        f"{live_site.url}/v1/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert text in error["message"]


def test_null_stream_and_max_tokens_mean_the_defaults(live_site, token_and_key, channel):
    _token, key = token_and_key
    response = httpx.post(
        f"{live_site.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HELLO, "stream": None, "max_tokens": None},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"


def test_a_body_over_the_limit_is_413(live_site, token_and_key, channel, settings):
    settings.GATEWAY_MAX_BODY_BYTES = 1024 * 1024
    _token, key = token_and_key
    response = httpx.post(
        f"{live_site.url}/v1/chat/completions",
        content=b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        + b"x" * (2 * 1024 * 1024)
        + b'"}]}',
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_no_channel_in_rotation_is_503(api, channel):
    Channel.objects.filter(pk=channel.pk).update(auto_disabled_at=timezone.now())
    from console.lib import invalidation

    invalidation.publish(config=True)
    with pytest.raises(openai.InternalServerError) as raised:
        chat(api)
    body, status = error_of(raised)
    assert (status, body["code"]) == (503, "no_channel")


def test_failed_upstreams_are_502_and_never_echo_the_upstream(api, upstream, alice):
    upstream.behaviour["status"] = 500
    with pytest.raises(openai.InternalServerError) as raised:
        chat(api)
    body, status = error_of(raised)
    assert (status, body["code"]) == (502, "upstream_error")
    text = str(body)
    assert upstream.key not in text
    assert upstream.url not in text and f":{upstream.port}" not in text
    assert "upstream says" not in text
    row = wait_until(lambda: RequestLog.objects.first())
    assert (row.status, row.error_code, row.cost) == (502, "upstream_error", 0)
    wait_until(lambda: services.account_for(alice).held == 0 or True)
    assert services.account_for(alice).balance == 10_000_000


def test_a_request_fault_reported_upstream_comes_back_as_is_and_costs_nothing(api, upstream):
    upstream.behaviour["status"] = 400
    with pytest.raises(openai.BadRequestError) as raised:
        chat(api)
    assert "upstream says 400" in str(raised.value)
    assert len(upstream.received) == 1  # not retried


def test_every_response_carries_the_log_rows_id(api):
    raw = api.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    request_id = raw.headers["x-request-id"]
    wait_until(lambda: RequestLog.objects.filter(id=request_id).exists())
    with pytest.raises(openai.NotFoundError) as raised:
        chat(api, model="gpt-9")
    failed_id = raised.value.response.headers["x-request-id"]
    row = wait_until(lambda: RequestLog.objects.filter(id=failed_id).first())
    # The name the client made up is not kept.
    assert (row.status, row.error_code, row.model) == (404, "model_not_found", UNKNOWN_MODEL)


def test_unknown_paths_and_methods(live_site, token_and_key, channel):
    _token, key = token_and_key
    headers = {"Authorization": f"Bearer {key}"}
    response = httpx.post(f"{live_site.url}/v1/images/edits", headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "unknown_url")
    response = httpx.get(f"{live_site.url}/v1/chat/completions", headers=headers)
    assert response.status_code == 405


def test_several_answers_are_held_for_each(live_site, alice, bob, channel, default_line):
    # Enough for one answer of 1,000 tokens (600 micro-dollars at gpt-4o-mini's prices), not
    # for three: the hold counts every answer that will be billed.
    clients = {}
    for user in (alice, bob):
        services.balance_credit(user=user, amount=1_000, kind=LedgerEntry.Kind.ADJUSTMENT)
        _token, key = token_create(user=user, name="n", line=default_line, notify=False)
        clients[user] = openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as raised:
        chat(clients[alice], n=3, max_tokens=1_000)
    assert error_of(raised)[0]["code"] == "insufficient_quota"
    assert chat(clients[bob], n=1, max_tokens=1_000).choices


def test_a_credit_reaches_a_refused_account_at_once(live_site, alice, channel, default_line):
    _token, key = token_create(user=alice, name="later", line=default_line, notify=False)
    client = openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        chat(client)
    services.balance_credit(user=alice, amount=1_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    assert chat(client).choices
