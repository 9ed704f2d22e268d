"""A cached request end to end, with the official client: the channel's cached tokens priced at
the model's cache multipliers, each part on the log row and the breakdown page, the charge
equal to the sum of the parts, and what it cost told to the client (a header, and usage.cost)."""

import csv
import io
import json
from decimal import Decimal

import httpx
import pytest

from billing.models import ModelPrice
from logs.models import RequestLog
from relay.metering import with_cost
from tests.conftest import balance_of, ledger_sum, streamed
from tests.relay.conftest import wait_until

MODEL = "claude-sonnet-4"
CACHED_USAGE = {
    "prompt_tokens": 10_000,
    "completion_tokens": 200,
    "total_tokens": 10_200,
    "prompt_tokens_details": {
        "cached_tokens": 8_000,
        "cache_write_tokens": 1_500,
        "cache_write_1h_tokens": 500,
    },
    "completion_tokens_details": {"reasoning_tokens": 120},
}
# 500 uncached + 8,000 × 0.1 + 1,000 × 1.25 + 500 × 2 + 200 × 5 = 4,550 weighted tokens,
# × 1.5 × $0.000002 = $0.013650
CACHED_COST = 13_650


@pytest.fixture
def claude_price(prices):
    return ModelPrice.objects.create(
        model=MODEL,
        vendor="Anthropic",
        model_multiplier=Decimal("1.5"),
        completion_multiplier=Decimal(5),
        **ModelPrice.vendor_cache_rates("Anthropic"),
    )


@pytest.fixture
def cached_channel(upstream, claude_price, default_line):
    from tests.relay.conftest import make_channel

    upstream.behaviour["usage"] = CACHED_USAGE
    return make_channel(upstream, models=[MODEL])


def logged(request_id):
    return wait_until(lambda: RequestLog.objects.filter(id=request_id).first(), message="log row")


def test_a_cached_request_is_charged_the_sum_of_its_parts(
    live_site, token_and_key, cached_channel, funded, alice_client
):
    _token, key = token_and_key
    before = balance_of(funded)
    response = httpx.post(
        f"{live_site.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert response.status_code == 200
    assert response.headers["x-request-cost"] == str(CACHED_COST)
    usage = response.json()["usage"]
    assert usage["cost"] == pytest.approx(0.01365)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 8_000

    row = logged(response.headers["x-request-id"])
    assert (row.prompt_tokens, row.completion_tokens) == (10_000, 200)
    assert (row.cache_read_tokens, row.cache_write_5m_tokens, row.cache_write_1h_tokens) == (
        8_000,
        1_000,
        500,
    )
    assert row.reasoning_tokens == 120
    assert (row.cache_read_multiplier, row.cache_write_5m_multiplier) == (
        Decimal("0.1"),
        Decimal("1.25"),
    )
    assert row.cache_write_1h_multiplier == 2
    parts = row.breakdown.parts()
    assert [(what, count, weighted) for what, count, _rate, weighted in parts] == [
        ("Input", 500, 500),
        ("Cached input read", 8_000, 800),
        ("Cache write (5 min)", 1_000, 1_250),
        ("Cache write (1 h)", 500, 1_000),
        ("Output", 200, 1_000),
    ]
    total = sum(weighted for *_rest, weighted in parts)
    assert row.cost == CACHED_COST == total * Decimal("1.5") * 2
    wait_until(lambda: balance_of(funded) == before - CACHED_COST, message="the charge settled")
    assert ledger_sum(funded) == balance_of(funded)

    page = alice_client.get(f"/logs/{row.id}/").content.decode()
    for shown in ("Cached input read", "8,000", "Cache write (5 min)", "Cache write (1 h)",
                  "120 of them reasoning", "4550", "$0.013650"):  # fmt: skip
        assert shown in page
    export = alice_client.get("/logs/export.csv?period=24h")
    exported = list(csv.DictReader(io.StringIO(streamed(export).decode())))
    assert exported[0]["cache_read_tokens"] == "8000"
    assert exported[0]["cache_write_1h_tokens"] == "500"
    assert Decimal(exported[0]["cache_read_multiplier"]) == Decimal("0.1")


def test_a_stream_tells_its_cost_in_the_usage_chunk_the_client_asked_for(
    live_site, token_and_key, cached_channel
):
    import openai

    _token, key = token_and_key
    client = openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage.prompt_tokens_details.cached_tokens == 8_000
    assert last.usage.model_extra["cost"] == pytest.approx(0.01365)
    # Not asked for: the usage chunk the gateway asked for itself is not passed on.
    quiet = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert all(chunk.usage is None for chunk in quiet)
    assert "".join(c.choices[0].delta.content or "" for c in quiet if c.choices) == (
        "Hello from upstream!"
    )


def test_a_refused_request_has_no_cost_header(live_site, token_and_key, cached_channel):
    _token, key = token_and_key
    response = httpx.post(
        f"{live_site.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert response.status_code == 404
    assert "x-request-cost" not in response.headers


def test_the_hold_covers_a_prompt_written_to_the_cache_at_twice_the_price(
    live_site, cached_channel, bob, default_line
):
    """A write kept an hour costs 2× input: money is held at that rate, so a balance that
    covers the prompt only at the plain price is refused rather than overdrawn."""
    from billing import services
    from billing.models import LedgerEntry
    from tokens.services import token_create

    services.balance_credit(user=bob, amount=40_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    _token, key = token_create(user=bob, name="agent", line=default_line, notify=False)
    prompt = "x" * 30_000  # about 10,000 tokens: $0.03 plain, $0.06 written for an hour

    def ask():
        return httpx.post(
            f"{live_site.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": MODEL,
                "max_tokens": 1,
                "messages": [{"role": "user", "content": prompt}],
            },
        )

    refused = ask()
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert balance_of(bob) == 40_000


def test_an_answer_keeps_its_text_as_it_came_with_its_cost(
    live_site, token_and_key, upstream, prices
):
    """The answer is written back with usage.cost: unicode stays unicode, and an answer JSON
    cannot write back as it came (a number past a float) goes on unchanged."""
    from tests.relay.conftest import make_channel

    make_channel(upstream)
    _token, key = token_and_key
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "你好"}]}
    upstream.behaviour["echo"] = True
    answer = httpx.post(
        f"{live_site.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=ask
    )
    assert json.loads(answer.json()["choices"][0]["message"]["content"]) == ask["messages"]
    written = with_cost({"text": "你好", "usage": {"prompt_tokens": 1}}, b"{}", 7)
    assert "你好".encode() in written and json.loads(written)["usage"]["cost"] == 7e-06
    assert answer.json()["usage"]["cost"] * 1_000_000 == pytest.approx(
        int(answer.headers["x-request-cost"])
    )
    # The cost goes into the usage that ends an answer, the rest as it came; an answer JSON
    # cannot write back (a number past a float) where the usage does not end it goes unchanged.
    past_a_float = b'{"usage": {"prompt_tokens": 3, "completion_tokens": 1, "x": 1e400}}'
    assert with_cost(json.loads(past_a_float), past_a_float, 7) == (
        b'{"usage": {"prompt_tokens": 3, "completion_tokens": 1, "x": 1e400, "cost": 7e-06}}'
    )
    usage_first = b'{"usage": {"prompt_tokens": 3, "completion_tokens": 1}, "x": 1e400}'
    assert with_cost(json.loads(usage_first), usage_first, 7) == usage_first


def test_embeddings_tell_their_cost_in_the_header_alone(live_site, token_and_key, upstream, prices):
    from tests.relay.conftest import make_channel

    make_channel(upstream)
    _token, key = token_and_key
    answer = httpx.post(
        f"{live_site.url}/v1/embeddings",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "text-embedding-3-small", "input": "Hello"},
    )
    assert answer.status_code == 200 and int(answer.headers["x-request-cost"]) >= 0
    assert "cost" not in answer.json()["usage"]
