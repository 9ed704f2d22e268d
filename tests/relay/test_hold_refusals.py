"""Money held before a request is served: a refusal says whether the quota (or balance) is used
up or this request needs more held than is left, with the amounts and what to do; a request
without max_tokens is fitted to what is left, and its limit sent upstream."""

from datetime import timedelta
from decimal import Decimal

import openai
import pytest
from django.utils import timezone

from billing import services
from billing.models import Hold, LedgerEntry, ModelPrice
from logs.models import RequestLog
from tests.relay.conftest import make_channel, wait_until
from tokens.models import Token
from tokens.services import token_create, token_update

HELLO = [{"role": "user", "content": "Hello"}]
CENT = 10_000  # micro-dollars
# gpt-4o: $2.50 per million input tokens, $10 per million output tokens. "Hello" is estimated
# at 9 tokens: 9 × 2.5 + 1,024 × 10 = 10,263 micro-dollars for the default 1,024 output tokens.
DEFAULT_HOLD = 10_263
FITTED = 997  # output tokens a cent covers after the prompt: (10,000 - 22.5) / 10


@pytest.fixture
def gpt_4o(upstream, default_line):
    ModelPrice.objects.create(
        model="gpt-4o",
        vendor="OpenAI",
        model_multiplier=Decimal("1.25"),
        completion_multiplier=Decimal(4),
    )
    return make_channel(upstream, models=["gpt-4o"])


def client_for(live_site, key):
    return openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)


@pytest.fixture
def cent_token(live_site, funded, default_line, gpt_4o):
    """A fresh token limited to $0.01, on an account with $10."""
    token, key = token_create(user=funded, name="cent", line=default_line, notify=False)
    Token.objects.filter(pk=token.pk).update(unlimited_quota=False, quota_limit=CENT)
    token_update(token=Token.objects.get(pk=token.pk))
    return token, client_for(live_site, key)


def refusal(raised):
    assert raised.value.status_code == 429
    return raised.value.body


def test_a_cent_tokens_first_call_without_max_tokens_is_served_within_its_quota(
    cent_token, upstream
):
    token, client = cent_token
    answer = client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert answer.choices[0].message.content == "Hello from upstream!"
    # Held for what a cent covers, and the channel told so: the answer cannot cost more. (An
    # OpenAI-compatible server other than OpenAI's is told in the field they all read.)
    assert upstream.received[-1]["payload"]["max_tokens"] == FITTED
    row = wait_until(lambda: RequestLog.objects.filter(token=token).first())
    assert 0 < row.cost <= CENT
    used = wait_until(lambda: Token.objects.get(pk=token.pk).quota_used)
    assert used == row.cost


def test_a_request_the_funds_cover_is_sent_as_it_came(live_site, token_and_key, gpt_4o, upstream):
    _token, key = token_and_key
    client_for(live_site, key).chat.completions.create(model="gpt-4o", messages=HELLO)
    payload = upstream.received[-1]["payload"]
    assert "max_completion_tokens" not in payload and "max_tokens" not in payload


def test_a_big_max_tokens_is_refused_for_its_hold_not_as_used_up(cent_token, settings):
    _token, client = cent_token
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=4_000)
    body = refusal(raised)
    assert body["code"] == "token_quota_exceeded"
    message = body["message"]
    assert "used up" not in message
    assert "needs $0.040023 held for its prompt and up to 4,000 output tokens" in message
    assert "the API token “cent” has only $0.01 left" in message
    assert f"Set max_tokens to {FITTED} or less" in message
    assert f"{settings.SITE_URL}/tokens/" in message


def test_a_responses_refusal_names_the_limit_as_the_responses_api_does(cent_token):
    _token, client = cent_token
    with pytest.raises(openai.RateLimitError) as raised:
        client.responses.create(model="gpt-4o", input="Hello", max_output_tokens=4_000)
    message = refusal(raised)["message"]
    assert "(its max_output_tokens)" in message and "Set max_output_tokens to " in message
    assert "max_tokens" not in message.replace("max_output_tokens", "")


def test_a_request_that_can_be_fitted_is_served_right_after_a_refusal(cent_token, upstream):
    """A refusal keeps the database from being asked again for a moment, but not for a request
    that what is left can still serve."""
    _token, client = cent_token
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=4_000)
    assert client.chat.completions.create(model="gpt-4o", messages=HELLO).choices
    assert upstream.received[-1]["payload"]["max_tokens"] == FITTED


def test_a_fitted_request_too_big_for_what_is_left_names_the_amounts(cent_token, upstream):
    token, client = cent_token
    Token.objects.filter(pk=token.pk).update(quota_used=CENT - 100)  # $0.0001 left
    token_update(token=Token.objects.get(pk=token.pk))
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    message = refusal(raised)["message"]
    assert f"needs ${DEFAULT_HOLD / 1e6:.6f} held" in message
    assert "up to 1,024 output tokens (the default when max_tokens is not set)" in message
    assert "has only $0.0001 left" in message
    assert "Set max_tokens to 7 or less" in message  # (100 - 22.5) / 10
    assert upstream.received == []


def test_a_used_up_quota_still_says_used_up(cent_token):
    token, client = cent_token
    Token.objects.filter(pk=token.pk).update(quota_used=CENT)
    token_update(token=Token.objects.get(pk=token.pk))
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert "“cent” has used up its own quota" in refusal(raised)["message"]


def test_a_balance_short_of_a_hold_says_so_and_where_to_recharge(
    live_site, alice, default_line, gpt_4o, settings
):
    services.balance_credit(user=alice, amount=CENT, kind=LedgerEntry.Kind.ADJUSTMENT)
    _token, key = token_create(user=alice, name="open", line=default_line, notify=False)
    with pytest.raises(openai.RateLimitError) as raised:
        client_for(live_site, key).chat.completions.create(
            model="gpt-4o", messages=HELLO, max_tokens=2_000
        )
    body = refusal(raised)
    assert body["code"] == "insufficient_quota"
    assert "your balance has only $0.01 left" in body["message"]
    assert f"{settings.SITE_URL}/billing/recharge/" in body["message"]


def test_a_balance_fitted_request_is_served_for_what_the_balance_holds(
    live_site, alice, default_line, gpt_4o, upstream
):
    services.balance_credit(user=alice, amount=CENT, kind=LedgerEntry.Kind.ADJUSTMENT)
    _token, key = token_create(user=alice, name="open", line=default_line, notify=False)
    client = client_for(live_site, key)
    assert client.chat.completions.create(model="gpt-4o", messages=HELLO, n=2).choices
    assert upstream.received[-1]["payload"]["max_tokens"] == FITTED // 2


def test_money_other_processes_hold_is_named_as_held_for_requests_in_progress(cent_token):
    token, client = cent_token
    Hold.objects.create(
        owner="another-process",
        user_id=token.user_id,
        token=token,
        amount=9_000,
        expires_at=timezone.now() + timedelta(minutes=2),
    )
    Token.objects.filter(pk=token.pk).update(quota_held=9_000)
    token_update(token=Token.objects.get(pk=token.pk))
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=500)
    message = refusal(raised)["message"]
    assert "has only $0.001 left ($0.009 more is held for requests in progress" in message
