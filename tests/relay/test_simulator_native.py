"""The simulator speaks as each vendor does: native Anthropic and Gemini answers, read by those
channel kinds' own conversion, and prompts cached as the vendors cache them, so that the demo
and the tests exercise every kind, and cached prices, without a vendor key."""

from decimal import Decimal

import anthropic
import openai
import pytest

from billing.models import ModelPrice
from logs.models import RequestLog
from relay.adapters.simulator import PROMPT_CACHE
from relay.models import Channel
from tests.relay.conftest import wait_until

MODELS = {"openai": "gpt-4.1", "anthropic": "claude-sonnet-4", "gemini": "gemini-2.0-flash"}
VENDORS = {"openai": "OpenAI", "anthropic": "Anthropic", "gemini": "Google"}
NOTES = "Project notes. " * 40  # about 200 tokens: above the channel's smallest cached prefix


@pytest.fixture(autouse=True)
def fresh_cache():
    PROMPT_CACHE.expiry.clear()


@pytest.fixture
def simulators(default_line, prices):
    for dialect, model in MODELS.items():
        ModelPrice.objects.get_or_create(
            model=model,
            defaults={
                "vendor": VENDORS[dialect],
                "model_multiplier": Decimal(1),
                "completion_multiplier": Decimal(4),
                **ModelPrice.vendor_cache_rates(VENDORS[dialect]),
            },
        )
        channel = Channel.objects.create(
            name=f"simulated {dialect}",
            type=Channel.Type.SIMULATOR,
            model_names=[model],
            simulator={"dialect": dialect, "completion_tokens": 6, "cache_min_tokens": 100},
        )
        channel.lines.set([default_line])


@pytest.fixture
def client(live_site, token_and_key, simulators):
    _token, key = token_and_key
    return openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)


def logged(request_id):
    return wait_until(lambda: RequestLog.objects.filter(id=request_id).first(), message="log row")


def conversation(last):
    return [
        {"role": "system", "content": NOTES},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": last},
    ]


@pytest.mark.parametrize("dialect", MODELS)
def test_each_dialect_answers_whole_and_streamed(client, dialect):
    model = MODELS[dialect]
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}]
    )
    assert answer.choices[0].message.content.startswith("This is a simulated answer")
    assert answer.usage.completion_tokens == 6
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 6


@pytest.mark.parametrize("dialect", MODELS)
def test_a_conversations_second_turn_reads_its_prefix_from_the_cache(client, dialect):
    model = MODELS[dialect]
    first = client.chat.completions.with_raw_response.create(
        model=model, messages=conversation("What next?")
    )
    second = client.chat.completions.with_raw_response.create(
        model=model, messages=conversation("And then?")
    )
    cached = second.parse().usage.prompt_tokens_details.cached_tokens
    assert first.parse().usage.prompt_tokens_details.cached_tokens in (0, None)
    assert cached > 100
    row = logged(second.headers["x-request-id"])
    assert row.cache_read_tokens == cached
    assert row.cache_read_multiplier == ModelPrice.objects.get(model=model).cache_read_multiplier
    plain = logged(first.headers["x-request-id"])
    assert row.cost < plain.cost  # the same prompt, mostly read from the cache


def test_claude_code_writes_the_cache_then_reads_it(live_site, token_and_key, simulators):
    """Through the Messages bridge, a breakpoint on the system prompt: the first request writes
    the prefix (at 1.25 for 5 minutes), the next reads it (at 0.1)."""
    _token, key = token_and_key
    claude = anthropic.Anthropic(base_url=live_site.url, api_key=key, max_retries=0)
    system = [{"type": "text", "text": NOTES, "cache_control": {"type": "ephemeral"}}]

    def ask(last):
        raw = claude.messages.with_raw_response.create(
            model=MODELS["anthropic"],
            max_tokens=64,
            system=system,
            messages=[
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi there."},
                {"role": "user", "content": last},
            ],
        )
        return raw.parse(), logged(raw.headers["x-request-id"])

    written, first = ask("What next?")
    read, second = ask("And then?")
    assert written.usage.cache_creation_input_tokens == first.cache_write_5m_tokens > 100
    assert written.usage.cache_read_input_tokens == 0
    assert read.usage.cache_read_input_tokens == second.cache_read_tokens > 100
    assert read.usage.cache_creation_input_tokens == 0
    assert (first.cache_write_5m_multiplier, second.cache_read_multiplier) == (
        Decimal("1.25"),
        Decimal("0.1"),
    )
    assert first.cost > second.cost
