"""The gateway as customers use it: the official openai package against a live server."""

import base64
from decimal import Decimal

import pytest

from billing.models import Account
from logs.models import RequestLog, UsageMinute
from tests.conftest import balance_of, ledger_sum
from tests.relay.conftest import wait_until


def logged(request_id):
    return wait_until(lambda: RequestLog.objects.filter(id=request_id).first(), message="log row")


def test_a_chat_completion_is_answered_billed_and_logged(api, upstream, alice, token_and_key):
    token, _key = token_and_key
    raw = api.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hello from upstream!"
    assert reply.usage.prompt_tokens == 12
    row = logged(raw.headers["x-request-id"])
    # (12 + 5 × 4) × 0.075 × 1 × 2 micro-dollars = 4.8 → 5
    assert (row.prompt_tokens, row.completion_tokens, row.cost) == (12, 5, 5)
    assert (row.model_multiplier, row.completion_multiplier, row.line_multiplier) == (
        Decimal("0.075"),
        Decimal(4),
        Decimal(1),
    )
    assert row.breakdown.exact_cost == Decimal("4.8")
    assert (row.status, row.endpoint, row.token_id, row.usage_estimated) == (
        200,
        "chat",
        token.pk,
        False,
    )
    assert row.client_ip == "127.0.0.1"
    wait_until(lambda: balance_of(alice) == 10_000_000 - 5, message="settlement")
    assert ledger_sum(alice) == balance_of(alice)
    sent = upstream.received[-1]
    assert sent["headers"]["Authorization"] == f"Bearer {upstream.key}"
    assert sent["payload"]["model"] == "gpt-4o-mini"


def test_a_streamed_chat_passes_chunks_through_and_bills_the_final_usage(api, upstream, alice):
    stream = api.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from upstream!"
    assert all(c.usage is None for c in chunks), "usage chunk shown to a client that did not ask"
    assert upstream.received[-1]["payload"]["stream_options"] == {"include_usage": True}
    row = wait_until(lambda: RequestLog.objects.filter(stream=True).first())
    assert (row.prompt_tokens, row.completion_tokens, row.usage_estimated) == (12, 4, False)
    assert row.ttft_ms is not None


def test_a_client_that_asks_for_usage_in_a_stream_gets_it(api):
    chunks = list(
        api.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage.completion_tokens == 4


def test_completions_and_embeddings(api):
    completion = api.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert completion.choices[0].text == "upstream text"
    embedding = api.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(embedding.data) == 2
    rows = wait_until(
        lambda: RequestLog.objects.filter(status=200).count() == 2 and RequestLog.objects.all()
    )
    assert {(r.endpoint, r.prompt_tokens, r.completion_tokens) for r in rows} == {
        ("completion", 7, 2),
        ("embedding", 6, 0),
    }


def test_models_lists_what_the_token_may_call(api, token_and_key):
    assert sorted(m.id for m in api.models.list()) == [
        "gpt-3.5-turbo-instruct",
        "gpt-4o-mini",
        "text-embedding-3-small",
    ]
    assert api.models.retrieve("gpt-4o-mini").owned_by == "OpenAI"
    token, _key = token_and_key
    token.allowed_models = ["gpt-4o-mini"]
    from tokens.services import token_update

    token_update(token=token)
    assert [m.id for m in api.models.list()] == ["gpt-4o-mini"]


def test_images_as_base64_data_urls_pass_through_untouched(api, upstream):
    image = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake image bytes" * 1000).decode()
    api.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": image}},
                ],
            }
        ],
    )
    sent = upstream.received[-1]["payload"]["messages"][0]["content"][1]
    assert sent == {"type": "image_url", "image_url": {"url": image}}


def test_usage_missing_upstream_is_estimated_and_marked(api, upstream):
    upstream.behaviour["no_usage"] = True
    api.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello there"}]
    )
    row = wait_until(lambda: RequestLog.objects.first())
    assert row.usage_estimated
    assert row.completion_tokens == 7  # "Hello from upstream!" is 20 characters, about 3 a token
    assert row.cost > 0


@pytest.mark.parametrize(
    ("usage", "stream"),
    [
        ({"prompt_tokens": -5, "completion_tokens": 3}, False),
        ({"prompt_tokens": 2**31, "completion_tokens": 3}, False),
        ({"prompt_tokens": "12", "completion_tokens": "4"}, False),
        ({"prompt_tokens": 12.0, "completion_tokens": True}, False),
        ("twelve", False),
        ({"prompt_tokens": -5, "completion_tokens": 3}, True),
        ({"prompt_tokens": 12, "completion_tokens": "4"}, True),
    ],
    ids=["negative", "beyond-32-bit", "strings", "float-and-bool", "not-an-object",
         "stream-negative", "stream-string"],
)  # fmt: skip
def test_unbelievable_upstream_usage_is_estimated(api, upstream, alice, usage, stream):
    upstream.behaviour["usage"] = usage
    answer = api.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello there"}], stream=stream
    )
    if stream:
        list(answer)
    row = wait_until(lambda: RequestLog.objects.first())
    assert row.status == 200 and row.usage_estimated
    assert 0 < row.prompt_tokens < 100 and row.cost > 0
    wait_until(lambda: ledger_sum(alice) == 10_000_000 - row.cost, message="the charge")
    assert balance_of(alice) == ledger_sum(alice)


def test_the_rollup_matches_the_log(api, alice):
    for _ in range(3):
        api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    wait_until(lambda: RequestLog.objects.count() == 3)
    minute = wait_until(lambda: UsageMinute.objects.filter(user_id=alice.pk).first())
    assert (minute.requests, minute.prompt_tokens, minute.completion_tokens, minute.cost) == (
        3,
        36,
        15,
        15,
    )


def test_money_held_for_requests_is_given_back(api, alice, settings):
    api.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    # The gateway holds a lease on the account while it is busy with it...
    wait_until(lambda: Account.objects.get(user=alice).held > 0)
    # ...and holds are released once idle (a few seconds) and by the shutdown of the server.
    from billing.holds import IDLE_RELEASE_SECONDS

    wait_until(lambda: Account.objects.get(user=alice).held == 0, timeout=IDLE_RELEASE_SECONDS + 3)
    assert balance_of(alice) == ledger_sum(alice) == 10_000_000 - 5
