"""Anthropic as a channel kind (relay.adapters.anthropic): chat completion requests sent to
Anthropic's Messages API, its answers made into chat completions. Against a local fake that
answers with recordings in Anthropic's documented shapes (tests/fake_anthropic.py), which the
official anthropic package reads as it reads Anthropic; then end to end through the gateway with
the official openai package as the client."""

import asyncio
import base64
import json
from decimal import Decimal

import anthropic
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.models import ModelPrice
from logs.models import RequestLog
from relay.adapters import anthropic as adapter
from relay.adapters.base import Reply, UpstreamError
from relay.health import channel_test
from relay.models import Channel
from tests import fake_anthropic
from tests.fake_anthropic import (
    ANSWERS,
    CACHED,
    MODEL,
    PLAIN,
    STREAMS,
    TOOL_USE,
    FakeAnthropic,
    sse,
)
from tests.fuzzing import fuzz_settings
from tests.relay.conftest import make_channel, wait_until

CLAUDE = "claude-haiku-4-5"
HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["location"],
        },
    },
}
PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9"
    "awAAAABJRU5ErkJggg=="
)
PDF = base64.b64encode(b"%PDF-1.4 a tiny document").decode()


@pytest.fixture
def fake():
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def claude_price(db):
    return ModelPrice.objects.create(
        model=CLAUDE,
        vendor="Anthropic",
        model_multiplier=Decimal("1.5"),
        completion_multiplier=Decimal(5),
    )


def anthropic_channel(fake, name="claude", *, models=(CLAUDE,), **fields):
    from billing.models import Line

    channel = Channel(
        name=name,
        type=Channel.Type.ANTHROPIC,
        base_url=fake.url,
        model_names=list(models),
        **fields,
    )
    channel.set_key(fake.key)
    channel.save()
    channel.lines.set(Line.objects.filter(name="default"))
    return channel


@pytest.fixture
def channel(fake, claude_price, prices, default_line):
    return anthropic_channel(fake, priority=10)


@pytest.fixture
def api(live_site, token_and_key, channel):
    _token, key = token_and_key
    return openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)


@pytest.fixture
def backup(upstream, claude_price):
    """An OpenAI-compatible channel for the same model, tried after the Anthropic one."""
    return make_channel(upstream, "backup", models=[CLAUDE], priority=0)


def logged(raw):
    request_id = raw.headers["x-request-id"]
    return wait_until(lambda: RequestLog.objects.filter(id=request_id).first(), message="log")


def chat(api, **fields):
    return api.chat.completions.with_raw_response.create(
        model=fields.pop("model", CLAUDE), messages=fields.pop("messages", HELLO), **fields
    )


def sent(fake):
    return fake.received[-1]["payload"]


# The fake is Anthropic as Anthropic's own SDK knows it


@pytest.fixture
def sdk(fake):
    return anthropic.Anthropic(base_url=fake.root, api_key=fake.key, max_retries=0)


def test_the_sdk_reads_the_fakes_answers(sdk, fake):
    message = sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
    assert (message.content[0].text, message.stop_reason) == ("Hi! My name is Claude.", "end_turn")
    fake.behaviour["answer"] = "cached"
    usage = sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO).usage
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (21, 1800)
    assert usage.cache_creation.ephemeral_1h_input_tokens == 200
    fake.behaviour["answer"] = "thinking"
    thinking, text = sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO).content
    assert (thinking.type, thinking.signature[:4], text.text) == (
        "thinking",
        "EqQB",
        "The square root of 144 is 12.",
    )
    fake.behaviour["answer"] = "tool_use"
    blocks = sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO).content
    assert [b.input["location"] for b in blocks if b.type == "tool_use"] == [
        "Paris, France",
        "London, UK",
    ]


@pytest.mark.parametrize("answer", ["plain", "cached", "thinking", "tool_use"])
def test_the_sdk_reads_the_fakes_streams_as_the_whole_answers(sdk, fake, answer):
    fake.behaviour["answer"] = answer
    with sdk.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
        message = stream.get_final_message()
    whole = ANSWERS[answer]
    assert [b.model_dump(exclude_none=True) for b in message.content] == whole["content"]
    assert message.usage.output_tokens == whole["usage"]["output_tokens"]
    assert message.usage.input_tokens == whole["usage"]["input_tokens"]


def test_the_sdk_meets_the_fakes_errors(sdk, fake):
    fake.behaviour["status"] = 529
    with pytest.raises(anthropic.OverloadedError):
        sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
    fake.behaviour.clear()
    fake.behaviour["stream_error"] = True
    with (
        pytest.raises(anthropic.APIStatusError, match="overloaded_error"),
        sdk.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream,
    ):
        stream.get_final_message()
    wrong = anthropic.Anthropic(base_url=fake.root, api_key="sk-ant-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
    fake.behaviour.clear()
    with pytest.raises(anthropic.BadRequestError, match="roles must alternate"):
        sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO * 2)


# Requests as Anthropic takes them (pure conversions)


def test_system_and_developer_messages_become_the_system_blocks():
    request = adapter.messages_request(
        {
            "model": CLAUDE,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "developer",
                    "content": [
                        {
                            "type": "text",
                            "text": "A long manual.",
                            "cache_control": {"type": "ephemeral", "ttl": "1h"},
                        }
                    ],
                },
                *HELLO,
            ],
        }
    )
    assert request["system"] == [
        {"type": "text", "text": "Be brief."},
        {
            "type": "text",
            "text": "A long manual.",
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        },
    ]
    assert request["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]


def test_the_conversation_alternates_with_tool_results_first_in_their_user_turn():
    request = adapter.messages_request(
        {
            "model": CLAUDE,
            "messages": [
                {"role": "user", "content": "Weather in Paris and London?"},
                {"role": "user", "content": "In celsius."},
                {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "Two calls.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": '{"location": "Paris"}',
                            },
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "not json"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "12°C"}],
                },
                {"role": "user", "content": "Thanks, which is warmer?"},
            ],
        }
    )
    assert request["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris and London?"},
                {"type": "text", "text": "In celsius."},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"location": "Paris"},
                },
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "12°C"},
                {"type": "text", "text": "Thanks, which is warmer?"},
            ],
        },
    ]


def test_a_tool_result_goes_before_the_users_words_and_empty_text_is_left_out():
    _hi, called, answered = adapter.messages_request(
        {
            "model": CLAUDE,
            "messages": [
                {"role": "user", "content": "Hi"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "user", "content": [{"type": "text", "text": "And then?"}]},
                {"role": "tool", "tool_call_id": "c", "content": ""},
            ],
        }
    )["messages"]
    assert called["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]
    assert answered["content"] == [
        {"type": "tool_result", "tool_use_id": "c"},
        {"type": "text", "text": "And then?"},
    ]


def test_images_and_pdfs_become_anthropics_blocks():
    request = adapter.messages_request(
        {
            "model": CLAUDE,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What are these?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{PIXEL}"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                        {
                            "type": "file",
                            "file": {
                                "filename": "a.pdf",
                                "file_data": f"data:application/pdf;base64,{PDF}",
                            },
                        },
                        {"type": "file", "file": {"file_data": PDF}},
                    ],
                }
            ],
        }
    )
    assert request["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            "title": "a.pdf",
        },
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
        },
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-abc"}},
        {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.jpg"}},
    ],
)
def test_a_part_anthropic_cannot_take_is_refused_with_what_to_send(part):
    with pytest.raises(adapter.Refused) as refused:
        adapter.messages_request(
            {"model": CLAUDE, "messages": [{"role": "user", "content": [part]}]}
        )
    assert "messages[0].content[0]" in refused.value.message


def test_tools_choices_and_settings_are_anthropics():
    request = adapter.messages_request(
        {
            "model": CLAUDE,
            "messages": HELLO,
            "tools": [
                WEATHER,
                {"type": "function", "function": {"name": "now"}},
                {"type": "web_search"},
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
            "max_completion_tokens": 300,
            "max_tokens": 100,
            "temperature": 1.7,
            "top_p": 0.9,
            "stop": "END",
            "user": "user-42",
            "seed": 7,
            "logprobs": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert {key: value for key, value in request.items() if key != "messages"} == {
        "model": CLAUDE,
        "max_tokens": 300,
        "tools": [
            {
                "name": "get_weather",
                "input_schema": WEATHER["function"]["parameters"],
                "description": "The current weather in a city.",
            },
            {"name": "now", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "temperature": 1.0,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
    }
    choices = [
        adapter.messages_request(
            {"model": CLAUDE, "messages": HELLO, "tools": [WEATHER], "tool_choice": choice}
        )["tool_choice"]
        for choice in ("auto", "required", "none")
    ]
    assert choices == [{"type": "auto"}, {"type": "any"}, {"type": "none"}]


def thinking_request(effort, **chat):
    return adapter.messages_request(
        {"model": CLAUDE, "messages": HELLO, "reasoning_effort": effort, **chat}
    )


def test_reasoning_effort_is_a_thinking_budget_inside_max_tokens():
    request = thinking_request("medium", max_tokens=8000, temperature=0.2, stream=True)
    assert request["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert request["max_tokens"] == 8000
    assert "temperature" not in request and request["stream"] is True


def test_a_budget_larger_than_max_tokens_is_cut_to_fit_below_it():
    high = thinking_request("high", max_tokens=2000)
    assert (high["thinking"]["budget_tokens"], high["max_tokens"]) == (1999, 2000)
    least = thinking_request("high", max_completion_tokens=1025)
    assert (least["thinking"]["budget_tokens"], least["max_tokens"]) == (1024, 1025)


def test_without_room_for_anthropics_least_budget_there_is_no_thinking():
    small = thinking_request("low", max_tokens=500, temperature=0.2)
    assert (small["max_tokens"], small["temperature"], "thinking" in small) == (500, 0.2, False)
    just_short = thinking_request("high", max_tokens=1024)
    assert (just_short["max_tokens"], "thinking" in just_short) == (1024, False)


def test_thinking_fits_in_the_default_max_tokens_the_gateway_held_for(settings):
    settings.GATEWAY_DEFAULT_MAX_TOKENS = 1000
    plain = adapter.messages_request({"model": CLAUDE, "messages": HELLO, "temperature": 0.2})
    assert (plain["max_tokens"], plain["temperature"], "thinking" in plain) == (1000, 0.2, False)
    assert "thinking" not in thinking_request("medium")
    settings.GATEWAY_DEFAULT_MAX_TOKENS = 4096
    request = thinking_request("medium")
    assert (request["thinking"]["budget_tokens"], request["max_tokens"]) == (4095, 4096)


@fuzz_settings(300)
@given(
    st.sampled_from(["minimal", "low", "medium", "high"]),
    st.sampled_from(["max_tokens", "max_completion_tokens"]),
    st.integers(min_value=1, max_value=100_000),
)
def test_max_tokens_is_never_more_than_the_client_asked(effort, field, limit):
    request = thinking_request(effort, **{field: limit})
    assert request["max_tokens"] == limit
    if "thinking" in request:
        assert 1024 <= request["thinking"]["budget_tokens"] < limit


def test_no_thinking_with_a_forced_tool_nor_while_tool_calls_are_answered():
    forced = thinking_request("high", max_tokens=8000, tools=[WEATHER], tool_choice="required")
    assert "thinking" not in forced and forced["max_tokens"] == 8000
    calling = adapter.messages_request(
        {
            "model": CLAUDE,
            "reasoning_effort": "high",
            "max_tokens": 8000,
            "messages": [
                *HELLO,
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "c", "content": "done"},
            ],
        }
    )
    assert "thinking" not in calling


def test_stop_sequences_anthropic_would_refuse_are_left_out():
    request = adapter.messages_request(
        {"model": CLAUDE, "messages": HELLO, "stop": ["END", " ", "\n", "", 7]}
    )
    assert request["stop_sequences"] == ["END"]
    assert "stop_sequences" not in adapter.messages_request(
        {"model": CLAUDE, "messages": HELLO, "stop": "  "}
    )


def test_n_above_one_is_refused():
    with pytest.raises(adapter.Refused, match="send n=1"):
        adapter.messages_request({"model": CLAUDE, "messages": HELLO, "n": 2})


# Answers as chat completions (pure conversions)


def test_a_message_is_a_chat_completion():
    completion = adapter.chat_completion(TOOL_USE)
    assert completion["id"] == "chatcmpl-msg_01Aq9w938a90dw8q7EgfqrTv"
    assert (completion["object"], completion["model"]) == ("chat.completion", MODEL)
    [choice] = completion["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the weather in both cities."
    assert [json.loads(c["function"]["arguments"]) for c in choice["message"]["tool_calls"]] == [
        {"location": "Paris, France", "unit": "celsius"},
        {"location": "London, UK", "unit": "celsius"},
    ]
    only_calls = {**TOOL_USE, "content": TOOL_USE["content"][1:]}
    assert adapter.chat_completion(only_calls)["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_stop_reasons_are_finish_reasons(stop_reason, finish_reason):
    completion = adapter.chat_completion({**PLAIN, "stop_reason": stop_reason})
    assert completion["choices"][0]["finish_reason"] == finish_reason


def test_usage_counts_the_cache_in_the_prompt():
    assert adapter.usage_of(CACHED["usage"]) == {
        "prompt_tokens": 21 + 1800 + 300,
        "completion_tokens": 50,
        "total_tokens": 2171,
        "prompt_tokens_details": {
            "cached_tokens": 1800,
            "cache_write_tokens": 300,
            "cache_write_1h_tokens": 200,
            "audio_tokens": 0,
            "image_tokens": 0,
        },
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    # Without the split, every write is a 5-minute one.
    older = adapter.usage_of(
        {"input_tokens": 5, "cache_creation_input_tokens": 40, "output_tokens": 2}
    )
    assert older["prompt_tokens_details"]["cache_write_tokens"] == 40
    assert older["prompt_tokens_details"]["cache_write_1h_tokens"] == 0
    assert adapter.usage_of("garbage")["total_tokens"] == 0


counts = st.one_of(
    st.integers(-(2**40), 2**40), st.none(), st.booleans(), st.text(max_size=3), st.floats()
)


@fuzz_settings(300)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "input_tokens": counts,
            "output_tokens": counts,
            "cache_read_input_tokens": counts,
            "cache_creation_input_tokens": counts,
            "cache_creation": st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {},
                    optional={
                        "ephemeral_5m_input_tokens": counts,
                        "ephemeral_1h_input_tokens": counts,
                    },
                ),
            ),
        },
    )
)
def test_usage_parts_are_never_negative_nor_more_than_their_totals(native):
    usage = adapter.usage_of(native)
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    details = usage["prompt_tokens_details"]
    parts = [*details.values(), *usage["completion_tokens_details"].values()]
    assert all(isinstance(n, int) and n >= 0 for n in [prompt, completion, *parts])
    assert usage["total_tokens"] == prompt + completion
    assert details["cached_tokens"] + details["cache_write_tokens"] <= prompt
    assert details["cache_write_1h_tokens"] <= details["cache_write_tokens"]
    assert details["audio_tokens"] + details["image_tokens"] <= prompt
    assert sum(usage["completion_tokens_details"].values()) <= completion


@fuzz_settings(200)
@given(st.from_type(object).filter(lambda value: not isinstance(value, dict)))
def test_usage_that_is_no_object_counts_nothing(native):
    usage = adapter.usage_of(native)
    assert usage == adapter.usage_of({})
    assert usage["total_tokens"] == 0


def test_errors_keep_anthropics_message_and_type():
    body = json.dumps(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    ).encode()
    assert json.loads(adapter.error_of(529, body)) == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "code": "overloaded_error",
            "param": None,
        }
    }
    refused = json.loads(adapter.error_of(401, b"<html>no</html>"))["error"]
    assert (refused["type"], refused["code"]) == ("authentication_error", "authentication_error")


# Streams as chunks (through the simulator's hook)


class NativeReply(Reply):
    """A native answer in memory, as the simulator hands one to `reply_of`."""

    def __init__(self, status=200, body=b"", lines=()):
        self.status = status
        self._body = body
        self._lines = list(lines)

    async def body(self):
        return self._body

    async def lines(self):
        for line in self._lines:
            yield line


def chunks_of(lines):
    async def read():
        return [
            chunk
            async for chunk in adapter.reply_of(NativeReply(lines=lines), {}, stream=True).lines()
        ]

    return asyncio.run(read())


def chunk_data(chunks):
    assert chunks[-1] == b"data: [DONE]\n\n"
    return [json.loads(chunk.removeprefix(b"data: ")) for chunk in chunks[:-1]]


def test_a_stream_is_chat_chunks_ending_with_the_usage():
    data = chunk_data(chunks_of([sse(event) for event in STREAMS["cached"]]))
    deltas = [chunk["choices"][0]["delta"] for chunk in data[:-1]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "The contract's term"},
        {"content": " is two years."},
        {},
    ]
    assert data[-2]["choices"][0]["finish_reason"] == "stop"
    assert data[-1]["choices"] == []
    assert data[-1]["usage"] == adapter.usage_of(CACHED["usage"])
    assert {chunk["id"] for chunk in data} == {"chatcmpl-msg_01FcUYbhrKrJoSHoi8Gt6Gvf"}


def test_a_stream_cut_anywhere_reads_the_same():
    whole = b"".join(sse(event) for event in STREAMS["tool_use"]).replace(b"\n", b"\r\n")
    pieces = [whole[i : i + 7] for i in range(0, len(whole), 7)]
    assert (
        chunk_data(chunks_of(pieces))
        and chunks_of(pieces)[:-2] == chunks_of([sse(event) for event in STREAMS["tool_use"]])[:-2]
    )


def test_streamed_tool_calls_and_thinking_are_chat_deltas():
    data = chunk_data(chunks_of([sse(event) for event in STREAMS["tool_use"]]))
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in data
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls == [
        {
            "index": 0,
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {"index": 0, "function": {"arguments": '{"location": "Paris, Fr'}},
        {"index": 0, "function": {"arguments": 'ance", "unit": "celsius"}'}},
        {
            "index": 1,
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {"index": 1, "function": {"arguments": '{"location": "London, UK",'}},
        {"index": 1, "function": {"arguments": ' "unit": "celsius"}'}},
    ]
    assert data[-2]["choices"][0]["finish_reason"] == "tool_calls"
    thinking = chunk_data(chunks_of([sse(event) for event in STREAMS["thinking"]]))
    assert "".join(
        c["choices"][0]["delta"].get("reasoning_content", "") for c in thinking[:-1]
    ) == ("To find the square root of 144, I need a number that times itself is 144.")
    assert thinking[-1]["usage"]["completion_tokens"] == 181


@pytest.mark.parametrize(
    ("events", "why"),
    [
        (
            [
                *STREAMS["plain"][:4],
                {"type": "error", "error": {"type": "overloaded_error", "message": "Hi! Over"}},
                *STREAMS["plain"][4:],
            ],
            "overloaded_error event",
        ),
        (STREAMS["plain"][:-1], "ended before message_stop"),
        (STREAMS["plain"][1:], "ended before message_stop"),  # no message_start
        (STREAMS["plain"][:1] * 2, "a message_start that could not be read"),
    ],
)
def test_a_stream_without_its_proper_end_broke_off(events, why):
    with pytest.raises(UpstreamError, match=f"stream broke off: .*{why}") as broke:
        chunks_of([sse(event) for event in events])
    assert "Hi" not in str(broke.value)  # never the answer's text, nor the vendor's message


def test_usage_counts_repeated_as_null_keep_the_earlier_ones():
    start, *rest = STREAMS["cached"]
    *middle, delta, stop = rest
    repeated = {
        **delta,
        "usage": {"input_tokens": None, "cache_read_input_tokens": None, "output_tokens": 50},
    }
    data = chunk_data(chunks_of([sse(e) for e in [start, *middle, repeated, stop]]))
    assert (data[-1]["usage"]["prompt_tokens"], data[-1]["usage"]["completion_tokens"]) == (
        2121,
        50,
    )


def test_without_any_usage_the_gateway_is_left_to_estimate():
    start, *rest = STREAMS["plain"]
    message = {key: v for key, v in start["message"].items() if key != "usage"}
    rest = [{k: v for k, v in e.items() if k != "usage"} for e in rest]
    data = chunk_data(chunks_of([sse(e) for e in [{**start, "message": message}, *rest]]))
    assert data[-1]["choices"][0]["finish_reason"] == "stop"
    assert not any("usage" in chunk for chunk in data)
    no_usage = {key: value for key, value in PLAIN.items() if key != "usage"}
    assert "usage" not in adapter.chat_completion(no_usage)


def test_an_event_too_long_breaks_the_stream(monkeypatch):
    monkeypatch.setattr("relay.adapters.anthropic.stream.MAX_EVENT", 1000)
    long_text = {"type": "text_delta", "text": "x" * 2000}
    long_event = {"type": "content_block_delta", "index": 0, "delta": long_text}
    with pytest.raises(UpstreamError, match="an event too long"):
        chunks_of([sse(STREAMS["plain"][0]), sse(long_event)])
    with pytest.raises(UpstreamError, match="a line too long"):  # before the stream ends
        chunks_of([sse(STREAMS["plain"][0]), b"data: " + b"x" * 600, b"x" * 600])


def test_an_unreadable_event_breaks_the_stream():
    with pytest.raises(UpstreamError, match="could not be read"):
        chunks_of([sse(STREAMS["plain"][0]), b"event: content_block_delta\ndata: {nope\n\n"])


def test_a_whole_answer_that_is_no_message_is_a_502():
    async def read(status, body):
        reply = adapter.reply_of(NativeReply(status, body), {}, stream=False)
        return json.loads(await reply.body()), reply.status

    slow = b'{"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down."}}'
    for junk in (b"<html>502 Bad Gateway</html>", slow):  # an error with a 200, too
        error, status = asyncio.run(read(200, junk))
        assert status == 502
        assert error["error"]["message"] == (
            "The upstream provider sent an answer that could not be read."
        )
    error, status = asyncio.run(read(429, slow))
    assert (status, error["error"]["message"], error["error"]["code"]) == (
        429,
        "Slow down.",
        "rate_limit_error",
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("tool_call", [None, ("get_weather", '{"location": "Paris"}')])
def test_the_simulators_native_answers_convert(stream, tool_call):
    counts = {
        "input": 10,
        "cache_read": 100,
        "cache_write_5m": 20,
        "cache_write_1h": 30,
        "output": 40,
        "reasoning": 15,
    }
    native = adapter.simulated(
        CLAUDE, ["Simulated", "answer."], counts, stream=stream, tool_call=tool_call
    )
    if stream:
        data = chunk_data(chunks_of(native))
        usage = data[-1]["usage"]
        deltas = [c["choices"][0]["delta"] for c in data[:-1]]
        text = "".join(d.get("content") or "" for d in deltas)
        arguments = "".join(
            c["function"]["arguments"] for d in deltas for c in d.get("tool_calls", [])
        )
        finish = data[-2]["choices"][0]["finish_reason"]
    else:
        completion = adapter.chat_completion(json.loads(native))
        usage, message = completion["usage"], completion["choices"][0]["message"]
        text, finish = message["content"] or "", completion["choices"][0]["finish_reason"]
        arguments = "".join(c["function"]["arguments"] for c in message.get("tool_calls", []))
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (160, 40)
    assert usage["prompt_tokens_details"]["cache_write_1h_tokens"] == 30
    if tool_call:
        assert (text, json.loads(arguments), finish) == ("", {"location": "Paris"}, "tool_calls")
    else:
        assert (text, finish) == ("Simulated answer.", "stop")


# End to end: the openai package, the gateway, an Anthropic channel


def test_a_chat_is_answered_by_the_anthropic_channel(api, fake):
    raw = chat(api, max_tokens=64, temperature=0.3, stop=["END"])
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hi! My name is Claude."
    assert (reply.choices[0].finish_reason, reply.model) == ("stop", MODEL)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 9)
    received = fake.received[-1]
    assert received["path"] == "/v1/messages"
    assert received["headers"]["x-api-key"] == fake.key
    assert received["headers"]["anthropic-version"] == "2023-06-01"
    assert received["headers"]["authorization"] is None
    assert received["payload"] == {
        "model": CLAUDE,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "temperature": 0.3,
        "stop_sequences": ["END"],
    }
    row = logged(raw)
    assert (row.status, row.prompt_tokens, row.completion_tokens, row.usage_estimated) == (
        200,
        12,
        9,
        False,
    )


@pytest.mark.parametrize("wants_usage", [True, False])
def test_a_stream_is_assembled_from_the_sdks_chunks(api, fake, wants_usage):
    options = {"stream_options": {"include_usage": True}} if wants_usage else {}
    stream = api.chat.completions.create(model=CLAUDE, messages=HELLO, stream=True, **options)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hi! My name is Claude."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usages = [c.usage for c in chunks if c.usage]
    if wants_usage:
        assert [(u.prompt_tokens, u.completion_tokens) for u in usages] == [(12, 9)]
        assert chunks[-1].choices == []
    else:
        assert usages == []
    assert sent(fake)["stream"] is True
    row = wait_until(lambda: RequestLog.objects.first())
    assert (row.stream, row.prompt_tokens, row.completion_tokens, row.error_code) == (
        True,
        12,
        9,
        "",
    )


def test_tool_calls_go_both_ways(api, fake):
    asked = [{"role": "user", "content": "Weather in Paris and London?"}]
    reply = api.chat.completions.create(
        model=CLAUDE, messages=asked, tools=[WEATHER], tool_choice="auto"
    )
    assert sent(fake)["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER["function"]["parameters"],
            "description": "The current weather in a city.",
        }
    ]
    assert sent(fake)["tool_choice"] == {"type": "auto"}
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert [
        (c.id, c.function.name, json.loads(c.function.arguments)["location"])
        for c in message.tool_calls
    ] == [
        ("toolu_01A09q90qw90lq917835lq9", "get_weather", "Paris, France"),
        ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", "London, UK"),
    ]
    answered = [
        *asked,
        message.model_dump(exclude_none=True),
        *(
            {"role": "tool", "tool_call_id": c.id, "content": f"{18 - i}°C"}
            for i, c in enumerate(message.tool_calls)
        ),
    ]
    second = api.chat.completions.create(model=CLAUDE, messages=answered, tools=[WEATHER])
    assert second.choices[0].message.content == "Hi! My name is Claude."
    assert sent(fake)["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "I'll check the weather in both cities."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "get_weather",
                    "input": {"location": "Paris, France", "unit": "celsius"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "name": "get_weather",
                    "input": {"location": "London, UK", "unit": "celsius"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                    "content": "18°C",
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "content": "17°C",
                },
            ],
        },
    ]


def test_streamed_tool_calls_assemble_in_the_sdk(api, fake):
    chunks = list(
        api.chat.completions.create(
            model=CLAUDE,
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[WEATHER],
            stream=True,
        )
    )
    calls = {}
    for chunk in chunks:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(
                call.index, {"id": call.id, "name": call.function.name, "arguments": ""}
            )
            entry["arguments"] += call.function.arguments or ""
    assert [
        (c["id"], c["name"], json.loads(c["arguments"])["location"]) for c in calls.values()
    ] == [
        ("toolu_01A09q90qw90lq917835lq9", "get_weather", "Paris, France"),
        ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", "London, UK"),
    ]


def test_the_system_prompt_and_an_image_arrive_natively(api, fake):
    api.chat.completions.create(
        model=CLAUDE,
        messages=[
            {"role": "system", "content": "Describe images in one word."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                ],
            },
        ],
    )
    payload = sent(fake)
    assert payload["system"] == [{"type": "text", "text": "Describe images in one word."}]
    assert payload["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                },
            ],
        }
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_cache_reads_and_writes_are_in_the_prompt_tokens(api, fake, stream):
    fake.behaviour["answer"] = "cached"
    if stream:
        chunks = list(
            api.chat.completions.create(
                model=CLAUDE, messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
        usage = chunks[-1].usage
    else:
        usage = api.chat.completions.create(model=CLAUDE, messages=HELLO).usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (2121, 50)
    assert usage.prompt_tokens_details.cached_tokens == 1800
    details = usage.prompt_tokens_details.model_dump()
    assert (details["cache_write_tokens"], details["cache_write_1h_tokens"]) == (300, 200)
    row = wait_until(lambda: RequestLog.objects.first())
    assert (row.prompt_tokens, row.completion_tokens, row.usage_estimated) == (2121, 50, False)


def test_thinking_arrives_as_reasoning_content(api, fake):
    fake.behaviour["answer"] = "thinking"
    reply = api.chat.completions.create(
        model=CLAUDE, messages=HELLO, reasoning_effort="high", max_tokens=2000
    )
    assert sent(fake)["thinking"] == {"type": "enabled", "budget_tokens": 1999}
    assert sent(fake)["max_tokens"] == 2000
    message = reply.choices[0].message
    assert message.content == "The square root of 144 is 12."
    assert message.reasoning_content.startswith("To find the square root of 144")


@pytest.mark.parametrize("status", [529, 500, 429])
@pytest.mark.parametrize("stream", [False, True])
def test_an_overloaded_channel_fails_over_before_the_first_byte(
    api, fake, upstream, backup, status, stream
):
    fake.behaviour["status"] = status
    raw = chat(api, stream=stream)
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        text = raw.parse().choices[0].message.content
    assert text == "Hello from upstream!"
    assert len(fake.received) == 1 and len(upstream.received) == 1
    row = logged(raw)
    assert (row.channel_id, row.retries) == (backup.pk, 1)


def test_a_refused_key_takes_the_channel_out_of_rotation(api, fake, upstream, backup, channel):
    channel.set_key("sk-ant-wrong")
    channel.save()
    reply = api.chat.completions.create(model=CLAUDE, messages=HELLO)
    assert reply.choices[0].message.content == "Hello from upstream!"
    disabled = wait_until(
        lambda: Channel.objects.filter(pk=channel.pk, auto_disabled_at__isnull=False).first()
    )
    assert "HTTP 401: the channel's key was refused" in disabled.disabled_reason


def test_an_answer_that_is_no_message_fails_over(api, fake, upstream, backup):
    fake.behaviour["junk"] = True
    reply = api.chat.completions.create(model=CLAUDE, messages=HELLO)
    assert reply.choices[0].message.content == "Hello from upstream!"


def test_a_refused_request_is_passed_on_with_anthropics_message(api, fake):
    fake.behaviour["status"] = 400
    with pytest.raises(openai.BadRequestError) as refused:
        api.chat.completions.create(model=CLAUDE, messages=HELLO)
    assert refused.value.body["message"].startswith("max_tokens: 200000 > 64000")
    assert refused.value.body["code"] == "invalid_request_error"


def test_a_mid_stream_error_ends_the_stream_broken(api, fake):
    fake.behaviour["stream_error"] = True
    chunks = []
    with pytest.raises(openai.APIError, match="broke off"):
        for chunk in api.chat.completions.create(model=CLAUDE, messages=HELLO, stream=True):
            chunks.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi! My"
    row = wait_until(lambda: RequestLog.objects.first())
    assert (row.error_code, row.usage_estimated) == ("stream_broken", True)


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [("cut_stream", "it ended before message_stop"), ("huge_delta", "LineTooLong")],
)
def test_a_stream_that_cannot_be_read_to_its_end_ends_broken(api, fake, caplog, behaviour, why):
    fake.behaviour[behaviour] = True
    with pytest.raises(openai.APIError, match="broke off"):
        list(api.chat.completions.create(model=CLAUDE, messages=HELLO, stream=True))
    row = wait_until(lambda: RequestLog.objects.first())
    assert row.error_code == "stream_broken"
    assert f"stream broke off: {why}" in caplog.text  # for staff, as the channel's failure


def test_what_anthropic_cannot_answer_is_refused_before_sending(api, fake):
    with pytest.raises(openai.BadRequestError, match="send n=1"):
        api.chat.completions.create(model=CLAUDE, messages=HELLO, n=2)
    anthropic_channel(fake, "misplaced", models=["text-embedding-3-small"])
    with pytest.raises(openai.BadRequestError) as refused:
        api.embeddings.create(model="text-embedding-3-small", input="hi")
    assert refused.value.body["message"] == (
        "An Anthropic channel serves chat models only: move text-embedding-3-small to an "
        "OpenAI-compatible channel."
    )
    assert fake.received == []


@pytest.fixture
def claude(live_site, token_and_key, channel):
    """Anthropic's own client, calling the gateway's Messages API (relay.bridges.anthropic)."""
    _token, key = token_and_key
    return anthropic.Anthropic(base_url=live_site.url, api_key=key, max_retries=0)


def test_anthropics_own_client_reaches_it_through_the_messages_bridge(claude, fake):
    fake.behaviour["answer"] = "cached"
    message = claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert message.content[0].text == "The contract's term is two years."
    assert (message.stop_reason, message.usage.output_tokens) == ("end_turn", 50)


def test_anthropics_own_client_streams_through_the_messages_bridge(claude, fake):
    fake.behaviour["answer"] = "cached"
    with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=HELLO) as stream:
        assert "".join(stream.text_stream) == "The contract's term is two years."
        message = stream.get_final_message()
    assert (message.stop_reason, message.usage.output_tokens) == ("end_turn", 50)


def test_staff_test_the_channel_now(fake, channel):
    ok, _latency, detail = channel_test(channel.pk)
    assert (ok, detail) == (True, "answered")
    assert sent(fake)["max_tokens"] == 1
    fake.behaviour["status"] = 529
    assert channel_test(channel.pk)[:1] == (False,)


def test_claude_codes_cache_breakpoints_reach_the_channel_and_its_cache_counts_come_back(
    claude, fake
):
    """Through the Messages bridge to an Anthropic channel, cache_control stays where the client
    put it (prompt caching is most of an agent's bill), and the answer's usage counts the
    cache's reads and writes apart, as Anthropic does."""
    fake.behaviour["answer"] = "cached"
    system = [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Project notes.", "cache_control": {"type": "ephemeral"}},
    ]
    turn = [{"type": "text", "text": "Hello", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    called = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15 degrees",
              "cache_control": {"type": "ephemeral"}}  # fmt: skip
    conversation = [
        {"role": "user", "content": turn},
        {"role": "assistant", "content": [called]},
        {"role": "user", "content": [result]},
    ]
    message = claude.messages.create(
        model=CLAUDE, max_tokens=64, system=system, messages=conversation
    )
    native = sent(fake)
    assert native["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": "15 degrees",
        "cache_control": {"type": "ephemeral"},
    }
    assert native["system"][1]["cache_control"] == {"type": "ephemeral"}
    assert fake.received[-1]["headers"]["anthropic-beta"] == "extended-cache-ttl-2025-04-11"
    assert native["messages"][0]["content"][0]["cache_control"] == {
        "type": "ephemeral",
        "ttl": "1h",
    }
    assert "_cache_marks" not in native
    recorded = fake_anthropic.CACHED["usage"]
    assert message.usage.cache_read_input_tokens == recorded["cache_read_input_tokens"]
    assert message.usage.cache_creation_input_tokens == recorded["cache_creation_input_tokens"]
    assert message.usage.input_tokens == recorded["input_tokens"]


def test_a_message_without_its_counts_reports_no_usage_so_the_gateway_estimates():
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": CLAUDE,
               "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn"}  # fmt: skip
    for usage in ({}, {"input_tokens": 5}, {"output_tokens": None}):
        assert "usage" not in adapter.chat_completion({**message, "usage": usage})
    assert "usage" in adapter.chat_completion(
        {**message, "usage": {"input_tokens": 5, "output_tokens": 1}}
    )
