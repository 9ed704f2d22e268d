"""Anthropic's Messages API as Claude Code and the official anthropic package use it, against a
live server: answered through the same chat channels, held and billed as chat is."""

import io
import json
import logging
import uuid

import anthropic
import httpx
import pytest
from django.conf import settings
from django.core.management import call_command
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from billing.models import Account
from logs.models import RequestLog
from relay.models import Channel
from tests.conftest import balance_of, ledger_sum
from tests.fuzzing import fuzz_settings
from tests.relay.conftest import wait_until
from tests.relay.test_fuzz import Probe, any_text, json_values
from tests.relay.test_privacy import redis_contents
from tokens.services import token_create, token_set_enabled

MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def claude(live_site, token_and_key, channel):
    _token, key = token_and_key
    return anthropic.Anthropic(base_url=live_site.url, api_key=key, max_retries=0)


def logged(request_id):
    return wait_until(lambda: RequestLog.objects.filter(id=request_id).first(), message="log row")


def ask(claude, **fields):
    return claude.messages.create(
        model=fields.pop("model", MODEL),
        max_tokens=fields.pop("max_tokens", 256),
        messages=fields.pop("messages", HELLO),
        **fields,
    )


# Answers


def test_a_message_is_answered_and_billed_as_the_same_chat_is(claude, api, alice):
    raw = claude.messages.with_raw_response.create(model=MODEL, max_tokens=256, messages=HELLO)
    message = raw.parse()
    assert message.id.startswith("msg_") and message.model == MODEL
    assert [(block.type, block.text) for block in message.content] == [
        ("text", "Hello from upstream!")
    ]
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == (
        "end_turn",
        12,
        5,
    )
    row = logged(raw.headers["x-request-id"])
    assert (row.endpoint, row.status, row.prompt_tokens, row.completion_tokens) == (
        "messages",
        200,
        12,
        5,
    )
    chat = api.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
    chat_row = logged(chat.headers["x-request-id"])
    assert row.cost == chat_row.cost == 5  # (12 + 5 × 4) × 0.075 × 2 micro-dollars
    assert row.breakdown == chat_row.breakdown
    wait_until(lambda: balance_of(alice) == 10_000_000 - 10, message="both charged")
    assert ledger_sum(alice) == balance_of(alice)


def test_the_channel_gets_a_chat_completion(claude, upstream):
    ask(
        claude,
        system="Be brief.",
        max_tokens=100,
        stop_sequences=["END"],
        metadata={"user_id": "someone"},
        # Sampling settings, which this SDK sends as extra fields.
        extra_body={"temperature": 0.2, "top_k": 5},
    )
    sent = upstream.received[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["payload"] == {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [{"role": "system", "content": "Be brief."}, *HELLO],
        "temperature": 0.2,
        "stop": ["END"],
    }


def test_an_answer_cut_at_max_tokens_says_so(claude, upstream):
    upstream.behaviour["finish_reason"] = "length"
    assert ask(claude).stop_reason == "max_tokens"
    with claude.messages.stream(model=MODEL, max_tokens=5, messages=HELLO) as stream:
        assert stream.get_final_message().stop_reason == "max_tokens"


def test_a_stream_is_anthropics_events_and_bills_the_final_usage(claude):
    with claude.messages.stream(model=MODEL, max_tokens=256, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == "Hello from upstream!"
    assert [block.text for block in message.content] == ["Hello from upstream!"]
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == (
        "end_turn",
        12,
        4,
    )
    row = wait_until(lambda: RequestLog.objects.first())
    assert (row.endpoint, row.stream, row.prompt_tokens, row.completion_tokens) == (
        "messages",
        True,
        12,
        4,
    )
    assert (row.usage_estimated, row.error_code) == (False, "")
    assert row.ttft_ms is not None


def test_the_stream_on_the_wire(live_site, token_and_key, channel):
    _token, key = token_and_key
    with httpx.stream(
        "POST",
        f"{live_site.url}/v1/messages",
        json={"model": MODEL, "max_tokens": 64, "messages": HELLO, "stream": True},
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    events = [block.split("\n") for block in body.split("\n\n") if block]
    kinds = [lines[0].removeprefix("event: ") for lines in events]
    assert kinds == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    last_delta = json.loads(events[-2][1].removeprefix("data: "))
    assert last_delta["usage"] | {"cache_creation": None} == {
        "input_tokens": 12,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_creation": None,
        "output_tokens": 4,
    }


def test_count_tokens_is_our_estimate_and_costs_nothing(claude, upstream, alice):
    counted = claude.messages.count_tokens(
        model=MODEL, system="Be brief.", messages=HELLO, tools=[WEATHER]
    )
    # 3 + (4 + 3 for "Be brief.") + (4 + 2 for "Hello") + 70 for the tool's definition
    assert counted.input_tokens == 16 + 70
    assert not upstream.received
    row = wait_until(lambda: RequestLog.objects.first())
    assert (row.endpoint, row.status, row.cost) == ("count", 200, 0)
    assert balance_of(alice) == 10_000_000
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="claude-nine", messages=HELLO)


# Tools


def test_a_tool_use_round_trip(claude, upstream):
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = ask(claude, messages=asked, tools=[WEATHER])
    assert first.stop_reason == "tool_use"
    [call] = first.content
    assert (call.type, call.id, call.name, call.input) == (
        "tool_use",
        "call_fake1",
        "get_weather",
        {"city": "Paris"},
    )
    sent = upstream.received[-1]["payload"]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": WEATHER["description"],
            },
        }
    ]
    answered = [
        *asked,
        {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18°C"}],
        },
    ]
    second = ask(claude, messages=answered, tools=[WEATHER])
    assert (second.stop_reason, second.content[0].text) == ("end_turn", "Hello from upstream!")
    sent = upstream.received[-1]["payload"]["messages"]
    assert sent[-2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_fake1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_fake1", "content": "18°C"},
    ]


@pytest.mark.parametrize("whole_calls", [False, True])
def test_a_streamed_tool_call_arrives_as_a_tool_use_block(claude, upstream, whole_calls):
    upstream.behaviour["whole_calls"] = whole_calls  # in pieces, or in one chunk as vLLM does
    with claude.messages.stream(
        model=MODEL,
        max_tokens=256,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    assert [(b.type, b.id, b.input) for b in message.content] == [
        ("tool_use", "call_fake1", {"city": "Paris"})
    ]


# As Claude Code sends it: the system prompt in cached blocks, cached tools, a turn of thinking,
# text and two parallel tool calls, then both results.
CLAUDE_CODE = {
    "model": MODEL,
    "max_tokens": 32000,
    "system": [
        {
            "type": "text",
            "text": "You are Claude Code, Anthropic's official CLI for Claude.",
            "cache_control": {"type": "ephemeral"},
        },
        {
            "type": "text",
            "text": "You are an interactive CLI tool that helps users with software tasks.",
            "cache_control": {"type": "ephemeral"},
        },
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>Be careful.</system-reminder>"},
                {
                    "type": "text",
                    "text": "Weather in Paris and Rome?",
                    "cache_control": {"type": "ephemeral"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two cities: two calls.", "signature": "EqQB"},
                {"type": "text", "text": "Checking both."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_01B",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18°C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01B",
                    "content": [{"type": "text", "text": "24°C"}],
                    "cache_control": {"type": "ephemeral"},
                },
            ],
        },
    ],
    "tools": [
        {**WEATHER, "cache_control": {"type": "ephemeral"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ],
    "tool_choice": {"type": "auto"},
    "metadata": {"user_id": "user_abc_account_def_session_ghi"},
    "thinking": {"type": "enabled", "budget_tokens": 4000},
    "extra_body": {"temperature": 1},
}


def send_as_claude_code(client, stream):
    if stream:
        with client.messages.stream(**CLAUDE_CODE) as events:
            return events.get_final_message()
    # The SDK itself refuses to wait for as many tokens as Claude Code asks for unstreamed.
    return client.messages.create(**{**CLAUDE_CODE, "max_tokens": 4096})


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_claude_codes_requests_through_a_chat_channel(claude, upstream, stream):
    message = send_as_claude_code(claude, stream)
    assert (message.stop_reason, message.content[0].text) == ("end_turn", "Hello from upstream!")
    sent = upstream.received[-1]["payload"]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assert sent["messages"][2]["content"] == "Checking both."
    assert [c["id"] for c in sent["messages"][2]["tool_calls"]] == ["toolu_01A", "toolu_01B"]
    assert sent["messages"][3:] == [
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "18°C"},
        {"role": "tool", "tool_call_id": "toolu_01B", "content": "24°C"},
    ]
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
    assert "thinking" not in sent and "metadata" not in sent


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_claude_codes_requests_through_a_simulator_channel(
    live_site, token_and_key, prices, default_line, stream
):
    simulator = Channel.objects.create(
        name="simulated", type=Channel.Type.SIMULATOR, model_names=[MODEL], simulator={}
    )
    simulator.lines.set([default_line])
    _token, key = token_and_key
    client = anthropic.Anthropic(base_url=live_site.url, api_key=key, max_retries=0)
    message = send_as_claude_code(client, stream)
    assert message.content[0].text.startswith("This is a simulated answer")
    assert (message.stop_reason, message.usage.output_tokens) == ("end_turn", 24)
    row = wait_until(lambda: RequestLog.objects.first())
    assert (row.endpoint, row.status, row.completion_tokens, row.usage_estimated) == (
        "messages",
        200,
        24,
        False,
    )
    assert row.cost > 0


# Keys


def test_a_bearer_key_works_as_well_as_x_api_key(live_site, token_and_key, channel):
    _token, key = token_and_key
    bearer = anthropic.Anthropic(base_url=live_site.url, auth_token=key, max_retries=0)
    assert ask(bearer).content[0].text == "Hello from upstream!"


# Errors, as the SDK raises them


def error_of(raised):
    body = raised.value.body
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    return raised.value.status_code, body["error"]["type"], body["error"]["message"]


def test_a_bad_key(live_site, channel):
    client = anthropic.Anthropic(base_url=live_site.url, api_key="sk-typo", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as raised:
        ask(client)
    status, kind, message = error_of(raised)
    assert (status, kind) == (401, "authentication_error")
    assert "Invalid API key" in message
    # Claude Code's ANTHROPIC_BASE_URL is the site, without the /v1 it adds itself.
    assert f"base URL {settings.SITE_URL} (without /v1: Anthropic clients add it)" in message


def test_a_missing_key_says_which_headers_carry_it(live_site, channel):
    response = httpx.post(
        f"{live_site.url}/v1/messages", json={"model": MODEL, "max_tokens": 8, "messages": HELLO}
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert "'x-api-key: sk-…'" in error["message"]


def test_a_disabled_token(claude, token_and_key):
    token, _key = token_and_key
    token_set_enabled(token=token, enabled=False)
    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        ask(claude)
    assert error_of(raised)[:2] == (403, "permission_error")
    assert "“backend” is disabled" in error_of(raised)[2]


def test_an_unknown_model(claude, upstream):
    with pytest.raises(anthropic.NotFoundError) as raised:
        ask(claude, model="claude-nine")
    status, kind, message = error_of(raised)
    assert (status, kind) == (404, "not_found_error")
    assert "/v1/models" in message
    assert not upstream.received


def test_an_insufficient_balance_charges_nothing(live_site, alice, channel, upstream):
    from billing.models import Line

    _token, key = token_create(
        user=alice, name="empty", line=Line.objects.get(name="default"), notify=False
    )
    client = anthropic.Anthropic(base_url=live_site.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as raised:
        ask(client)
    status, kind, message = error_of(raised)
    assert (status, kind) == (429, "rate_limit_error")
    assert "/billing/recharge/" in message
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert not upstream.received
    row = wait_until(lambda: RequestLog.objects.first())
    assert (row.status, row.cost) == (429, 0)
    assert balance_of(alice) == ledger_sum(alice) == 0


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"max_tokens": None}, "'max_tokens' is required"),
        ({"messages": "Hello"}, "'messages' is required"),
        ({"messages": [{"role": "system", "content": "x"}]}, "top-level 'system'"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "“video”"),
        ({"tools": [{"name": "f"}]}, "'input_schema'"),
    ],
    ids=["no-max-tokens", "messages-a-string", "system-role", "unknown-block", "no-schema"],
)
def test_a_bad_request_says_what_to_send(claude, upstream, fields, says):
    body = {"model": MODEL, "max_tokens": 256, "messages": HELLO, **fields}
    with pytest.raises(anthropic.BadRequestError) as raised:
        # Sent as it is: messages.create would refuse some of these itself.
        claude.post("/v1/messages", body=body, cast_to=anthropic.types.Message)
    status, kind, message = error_of(raised)
    assert (status, kind) == (400, "invalid_request_error")
    assert says in message
    assert not upstream.received


def test_failed_upstreams_are_an_api_error_and_uncharged(claude, upstream, alice):
    upstream.behaviour["status"] = 500
    with pytest.raises(anthropic.InternalServerError) as raised:
        ask(claude)
    status, kind, message = error_of(raised)
    assert (status, kind) == (502, "api_error")
    assert "Nothing was charged" in message and "upstream says" not in message
    row = wait_until(lambda: RequestLog.objects.first())
    assert (row.status, row.error_code, row.cost) == (502, "upstream_error", 0)
    assert balance_of(alice) == 10_000_000


def test_a_request_refused_upstream_is_an_invalid_request(claude, upstream):
    upstream.behaviour["status"] = 400
    with pytest.raises(anthropic.BadRequestError) as raised:
        ask(claude)
    assert error_of(raised)[:2] == (400, "invalid_request_error")
    assert "upstream says 400" in error_of(raised)[2]


def test_a_broken_stream_ends_in_an_error_event_and_bills_what_was_served(claude, upstream, alice):
    upstream.behaviour["break_stream"] = True
    texts = []
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        claude.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream,
    ):
        texts.extend(stream.text_stream)
    assert "".join(texts) == "Hello from"
    assert raised.value.body["error"] == {
        "type": "api_error",
        "message": "The upstream stream broke off. Retry the request.",
    }
    row = wait_until(lambda: RequestLog.objects.first())
    assert (row.error_code, row.usage_estimated, row.completion_tokens) == (
        "stream_broken",
        True,
        2,
    )
    assert row.cost > 0
    wait_until(lambda: balance_of(alice) == 10_000_000 - row.cost, message="the charge")


# Privacy


def test_a_canary_in_every_part_of_a_message_appears_nowhere(claude, upstream, caplog):
    """The canary travels in the system prompt, text, a tool call and its result, an answer
    (the fake upstream echoes), a stream, a count and an upstream's refusal; it is in none of
    the database, Redis, the journal or the log output."""
    caplog.set_level(logging.DEBUG)
    canary = f"canary-{uuid.uuid4().hex}"
    upstream.behaviour["echo"] = True
    messages = [
        {"role": "user", "content": f"Remember {canary}"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": canary},
                }
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": canary}],
        },
    ]
    reply = ask(claude, system=canary, messages=messages, tools=[WEATHER])
    assert canary in reply.content[0].text  # it did travel through the gateway
    with claude.messages.stream(model=MODEL, max_tokens=64, messages=messages) as stream:
        assert canary in stream.get_final_message().content[0].text
    claude.messages.count_tokens(model=MODEL, system=canary, messages=messages)
    upstream.behaviour["status"] = 400
    with pytest.raises(anthropic.BadRequestError) as refused:
        ask(claude, messages=messages)
    assert canary in str(refused.value)  # the upstream's refusal reached the client as it was
    wait_until(lambda: RequestLog.objects.count() == 4, message="the requests logged")
    # What the server logged: the SDK in this process logs its own requests at DEBUG.
    server_log = "\n".join(
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(("anthropic", "httpx", "httpcore"))
    )
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    journal = b"".join(p.read_bytes() for p in settings.GATEWAY_JOURNAL_DIR.glob("*"))
    stores = {
        "the database": dump.getvalue().encode(),
        "the journal": journal,
        "the log output": server_log.encode(),
        "Redis": redis_contents() if settings.REDIS_URL else b"",
    }
    for where, content in stores.items():
        assert canary.encode() not in content, f"the canary is in {where}"


# Fuzzing the parser: whatever arrives, no 500, and a refusal costs nothing

MESSAGES = "/v1/messages"
VALID = {"model": MODEL, "max_tokens": 16, "messages": HELLO}
BLOCK_TYPES = [
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
]
block_fields = st.fixed_dictionaries(
    {"type": st.sampled_from(BLOCK_TYPES) | any_text},
    optional={
        "text": json_values,
        "source": json_values
        | st.fixed_dictionaries(
            {"type": st.sampled_from(["base64", "url", "text", "file"])},
            optional={"media_type": json_values, "data": json_values, "url": json_values},
        ),
        "id": json_values,
        "name": json_values,
        "input": json_values,
        "tool_use_id": json_values,
        "content": json_values | st.lists(json_values, max_size=2),
        "cache_control": json_values,
    },
)
contents = any_text | st.lists(block_fields | json_values, max_size=3) | json_values
turns = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant"]) | json_values, "content": contents}
)
tools = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["get_weather"]) | json_values,
        "type": st.sampled_from(["custom", "web_search_20250305"]) | json_values,
        "input_schema": st.just({"type": "object"}) | json_values,
        "description": json_values,
    },
)
FIELDS = {
    "model": json_values,
    "max_tokens": json_values | st.integers(10**10, 10**30),
    "messages": st.lists(turns | json_values, max_size=3) | json_values,
    "system": json_values | st.lists(block_fields, max_size=2),
    "stream": json_values,
    "temperature": json_values,
    "top_p": json_values,
    "stop_sequences": json_values,
    "tools": st.lists(tools | json_values, max_size=2) | json_values,
    "tool_choice": json_values
    | st.fixed_dictionaries(
        {"type": st.sampled_from(["auto", "any", "tool", "none"])},
        optional={"name": json_values, "disable_parallel_tool_use": json_values},
    ),
    "thinking": json_values,
    "metadata": json_values,
}


@st.composite
def messages_requests(draw):
    """A valid request with one to three fields replaced by near-valid or arbitrary values."""
    request = dict(VALID)
    for field in draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3)):
        request[field] = draw(FIELDS[field])
    if request.get("stream") is True:
        request["stream"] = False  # a stream answers 200 before its bill: judged elsewhere
    return request


@pytest.fixture
def hand_flush(settings):
    """Flushed by hand, per example; set before the server starts (see test_fuzz)."""
    settings.GATEWAY_FLUSH_SECONDS = 3600


@pytest.fixture
def probe(settings, hand_flush, live_site, token_and_key, channel, upstream, funded):
    settings.GATEWAY_REFUSALS_LOGGED_PER_MINUTE = 10**9
    _token, key = token_and_key
    probe = Probe(live_site, key, upstream, funded)
    yield probe
    probe.close()


def test_the_parser_never_fails_and_refusals_cost_nothing(probe):
    @fuzz_settings(200, HealthCheck.large_base_example)
    @given(request=messages_requests())
    def run(request):
        body = json.dumps(request).encode()  # lone surrogates as \ud800 escapes: valid JSON
        before = probe.state()
        response = probe.send("POST", MESSAGES, body)
        if response.status_code != 200:
            probe.refused(response, before, leases=True)  # earlier answers' leases may go
            assert response.json()["type"] == "error"
            return
        probe.statuses["200, billed"] += 1
        assert response.json()["type"] == "message"
        probe.write_logs()
        after = probe.state()
        row = RequestLog.objects.get(id=response.headers["x-request-id"])
        assert after[4] == before[4] + 1, "the upstream was not asked exactly once"
        assert (row.status, row.cost, row.endpoint) == (200, 5, "messages")
        assert after[0] == before[0] - row.cost

    run()
    probe.close()
    probe.site.stop()
    account = Account.objects.get(user=probe.user)
    spent = sum(RequestLog.objects.values_list("cost", flat=True))
    assert (account.balance, account.held) == (probe.start_balance - spent, 0)
    assert ledger_sum(probe.user) == account.balance
