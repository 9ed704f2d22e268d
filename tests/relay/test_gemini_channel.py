"""Gemini channels: OpenAI chat requests carried to Google's generateContent and its answers,
streams and errors brought back in OpenAI's shapes. The conversions are checked on Gemini's
documented shapes (tests/fake_gemini.py, itself checked against Google's own SDK), then end to
end through a live gateway with the official openai client."""

import asyncio
import json
from decimal import Decimal

import aiohttp
import openai
import pytest
from django.test import override_settings
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from hypothesis import given
from hypothesis import strategies as st

from logs.models import RequestLog
from relay.adapters import gemini
from relay.adapters.base import Reply, UpstreamError
from relay.adapters.gemini import stream as gemini_stream
from relay.config import ChannelSnapshot
from relay.health import channel_test
from relay.metering import completion_allowance
from relay.models import Channel
from tests.fake_gemini import (
    BLOCKED,
    EXHAUSTED,
    INTERNAL,
    KEY_INVALID,
    MODEL,
    PLAIN,
    SIGNATURE,
    STREAM_PLAIN,
    STREAM_THINKING,
    STREAM_TOOL_CALL,
    THINKING,
    TOOL_CALL,
    UNAVAILABLE,
    FakeGemini,
    camel,
)
from tests.fake_upstream import PIXEL
from tests.fuzzing import fuzz_settings
from tests.relay.conftest import make_channel, wait_until

HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def fake():
    server = FakeGemini().start()
    yield server
    server.stop()


class Recorded(Reply):
    """Gemini's native answer as recorded: a status, a body, or SSE bytes cut into pieces."""

    def __init__(self, status=200, body=b"", pieces=()):
        self.status = status
        self.content = body
        self.pieces = list(pieces)

    async def body(self):
        return self.content

    async def lines(self):
        for piece in self.pieces:
            yield piece


def sse(chunks):
    return b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)


def cut(data, size):
    return [data[i : i + size] for i in range(0, len(data), size)]


def read(reply):
    async def settle():
        await reply.settle()
        return reply.status, json.loads(await reply.body())

    return asyncio.run(settle())


def streamed_chunks(reply):
    """The OpenAI chunks of a converted stream, [DONE] last as the string "[DONE]"."""

    async def collect():
        return [line async for line in reply.lines()]

    lines = asyncio.run(collect())
    assert all(line.startswith(b"data: ") and line.endswith(b"\n\n") for line in lines)
    return [json.loads(line[6:]) if line[6:8] != b"[D" else "[DONE]" for line in lines]


def answered(native, payload=None, body=None):
    raw = Recorded(body=json.dumps(native).encode() if body is None else body)
    return read(gemini.reply_of(raw, payload or {"model": MODEL}, stream=False))


def streamed(chunks, size=7, payload=None):
    raw = Recorded(pieces=cut(sse(chunks), size))
    return streamed_chunks(gemini.reply_of(raw, payload or {"model": MODEL}, stream=True))


# The request


def test_a_chat_request_becomes_a_generate_content_request():
    native = gemini.request_of(
        {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "Hello"},
                {"role": "user", "content": [{"type": "text", "text": "Still there?"}]},
                {"role": "assistant", "content": "Oui."},
                {"role": "user", "content": "Thanks"},
            ],
            "max_completion_tokens": 100,
            "max_tokens": 5,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "n": 2,
            "seed": 7,
            "presence_penalty": 1,
            "logprobs": True,
            "user": "someone",
            "stream_options": {"include_usage": True},
        }
    )
    assert native == {
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hello"}, {"text": "Still there?"}]},
            {"role": "model", "parts": [{"text": "Oui."}]},
            {"role": "user", "parts": [{"text": "Thanks"}]},
        ],
        "generationConfig": {
            "maxOutputTokens": 100,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["END"],
            "candidateCount": 2,
            "seed": 7,
        },
    }


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tools_and_tool_choice_become_declarations_and_a_calling_mode(choice, config):
    bare = {"type": "function", "function": {"name": "now"}}
    builtin = {"type": "web_search"}
    native = gemini.request_of(
        {"messages": HELLO, "tools": [WEATHER, bare, builtin], "tool_choice": choice}
    )
    assert native["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "The current weather in a city.",
                    "parametersJsonSchema": WEATHER["function"]["parameters"],
                },
                {"name": "now"},
            ]
        }
    ]
    assert native["toolConfig"] == {"functionCallingConfig": config}


@pytest.mark.parametrize(
    ("fields", "config"),
    [
        (
            {"response_format": {"type": "json_object"}},
            {"maxOutputTokens": 1024, "responseMimeType": "application/json"},
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "city", "schema": {"type": "object"}, "strict": True},
                }
            },
            {
                "maxOutputTokens": 1024,
                "responseMimeType": "application/json",
                "responseJsonSchema": {"type": "object"},
            },
        ),
        ({"response_format": {"type": "text"}}, {"maxOutputTokens": 1024}),
        (
            {"reasoning_effort": "low", "max_tokens": 30000},
            {"maxOutputTokens": 30000, "thinkingConfig": {"thinkingBudget": 1024}},
        ),
        (
            {"reasoning_effort": "medium", "max_tokens": 30000},
            {"maxOutputTokens": 30000, "thinkingConfig": {"thinkingBudget": 8192}},
        ),
        (
            {"reasoning_effort": "high", "max_completion_tokens": 30000},
            {"maxOutputTokens": 30000, "thinkingConfig": {"thinkingBudget": 15000}},
        ),
        ({"reasoning_effort": "minimal"}, {"maxOutputTokens": 1024}),
        (
            {"max_tokens": 0, "temperature": True, "stop": ["A", 3], "n": "2"},
            {"maxOutputTokens": 1024, "stopSequences": ["A"]},
        ),
    ],
)
def test_generation_settings_are_carried_when_gemini_has_them(fields, config):
    assert gemini.request_of({"messages": HELLO, **fields}).get("generationConfig") == config


def test_thinking_and_answer_fit_in_the_tokens_the_gateway_held_money_for(settings):
    """Gemini's maxOutputTokens bounds thoughts and answer together: it goes with every
    request, at the client's limit or the gateway's default, and thinking takes at most half."""
    settings.GATEWAY_DEFAULT_MAX_TOKENS = 2000

    def config(**fields):
        return gemini.request_of({"messages": HELLO, **fields})["generationConfig"]

    assert config(reasoning_effort="high") == {
        "maxOutputTokens": 2000,
        "thinkingConfig": {"thinkingBudget": 1000},
    }
    assert config(reasoning_effort="low", max_tokens=300) == {
        "maxOutputTokens": 300,
        "thinkingConfig": {"thinkingBudget": 150},
    }
    assert config() == {"maxOutputTokens": 2000}
    assert config(reasoning_effort="medium", max_completion_tokens=1) == {
        "maxOutputTokens": 1,
        "thinkingConfig": {"thinkingBudget": 0},
    }


@fuzz_settings(300)
@given(
    effort=st.sampled_from(["low", "medium", "high"]),
    limits=st.fixed_dictionaries(
        {},
        optional={
            "max_tokens": st.integers(1, 10**6),
            "max_completion_tokens": st.integers(1, 10**6),
            "n": st.integers(1, 8),
        },
    ),
    default=st.integers(1, 10**6),
)
def test_a_request_never_asks_for_more_output_than_was_held(effort, limits, default):
    payload = {"model": MODEL, "messages": HELLO, "reasoning_effort": effort, **limits}
    with override_settings(GATEWAY_DEFAULT_MAX_TOKENS=default):
        held = completion_allowance(payload, "chat/completions")
        config = gemini.request_of(payload)["generationConfig"]
    assert config["maxOutputTokens"] * config.get("candidateCount", 1) == held
    assert 0 <= config["thinkingConfig"]["thinkingBudget"] <= config["maxOutputTokens"] // 2
    del payload["reasoning_effort"]
    with override_settings(GATEWAY_DEFAULT_MAX_TOKENS=default):
        unthinking = gemini.request_of(payload)["generationConfig"]
    assert unthinking["maxOutputTokens"] * unthinking.get("candidateCount", 1) == held


def test_images_audio_and_files_become_inline_data_or_file_uris():
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?size=2"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/photo", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
        },
    ]
    parts = gemini.request_of({"messages": [{"role": "user", "content": content}]})["contents"][0][
        "parts"
    ]
    assert parts == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": PIXEL}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=2"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png,not-base64"}},
        {"type": "file", "file": {"file_id": "file-abc"}},
        {"type": "input_audio", "input_audio": {"format": "wav"}},
        {"type": "video", "video": {}},
    ],
)
def test_content_gemini_cannot_be_sent_is_refused(part):
    with pytest.raises(gemini.Refused):
        gemini.request_of({"messages": [{"role": "user", "content": [part]}]})


def test_tool_calls_and_results_go_back_as_function_parts_with_their_signature():
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            "extra_content": {"google": {"thought_signature": SIGNATURE}},
        },
        {
            "id": "call_2",
            "type": "function",
            "function": {"name": "get_time", "arguments": "not json"},
        },
    ]
    native = gemini.request_of(
        {
            "messages": [
                *HELLO,
                {"role": "assistant", "content": None, "tool_calls": calls},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "noon"}],
                },
                {"role": "user", "content": "And tomorrow?"},
            ]
        }
    )
    assert native["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": SIGNATURE,
                },
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}},
                {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
                {"text": "And tomorrow?"},
            ],
        },
    ]


def test_the_request_matches_the_one_googles_sdk_builds(fake):
    """The same question through Google's SDK and through the adapter arrives alike."""
    client = genai.Client(
        api_key=fake.key,
        http_options=types.HttpOptions(base_url=fake.root, api_version="v1beta"),
    )
    client.models.generate_content(
        model=MODEL,
        contents="Hello",
        config=types.GenerateContentConfig(
            system_instruction="Be brief.",
            max_output_tokens=4000,
            temperature=0.2,
            stop_sequences=["END"],
            thinking_config=types.ThinkingConfig(thinking_budget=1024),
            response_mime_type="application/json",
            tools=[
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name="get_weather",
                            description="The current weather in a city.",
                            parameters_json_schema=WEATHER["function"]["parameters"],
                        )
                    ]
                )
            ],
            tool_config=types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(mode="AUTO")
            ),
        ),
    )
    ours = gemini.request_of(
        {
            "model": MODEL,
            "messages": [{"role": "system", "content": "Be brief."}, *HELLO],
            "max_tokens": 4000,
            "temperature": 0.2,
            "stop": ["END"],
            "reasoning_effort": "low",
            "response_format": {"type": "json_object"},
            "tools": [WEATHER],
            "tool_choice": "auto",
        }
    )
    theirs = fake.received[-1]["payload"]
    theirs["systemInstruction"].pop("role")  # optional, and ignored for it
    assert camel_keys(ours) == camel_keys(theirs)


def camel_keys(value, inside_schema=False):
    """A request with every field named in lowerCamelCase, as Gemini reads it (a schema's own
    property names left alone)."""
    if isinstance(value, list):
        return [camel_keys(item, inside_schema) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        (key if inside_schema else camel(key)): camel_keys(
            item, inside_schema or camel(key) == "parametersJsonSchema"
        )
        for key, item in value.items()
    }


# The answer


def test_an_answer_becomes_a_chat_completion():
    status, answer = answered(PLAIN)
    assert status == 200
    assert answer["id"] == "chatcmpl-mAitaLmkHPPlz7IPvtfUqQ4"
    assert (answer["object"], answer["model"]) == ("chat.completion", MODEL)
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from Gemini!"},
            "finish_reason": "stop",
        }
    ]
    assert (answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]) == (9, 5)


def test_thoughts_become_reasoning_content_and_cached_tokens_are_counted():
    _status, answer = answered(THINKING)
    message = answer["choices"][0]["message"]
    assert message["content"] == "The answer is 42."
    assert message["reasoning_content"].startswith("**Weighing the question**")
    assert answer["usage"] == {
        "prompt_tokens": 2061,
        "completion_tokens": 319,
        "total_tokens": 2380,
        "prompt_tokens_details": {
            "cached_tokens": 2048,
            "cache_write_tokens": 0,
            "cache_write_1h_tokens": 0,
            "audio_tokens": 0,
            "image_tokens": 0,
        },
        "completion_tokens_details": {"reasoning_tokens": 312, "audio_tokens": 0},
    }


def test_a_function_call_becomes_a_tool_call_carrying_its_signature():
    _status, answer = answered(TOOL_CALL)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and len(call["id"]) > 12
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert call["extra_content"] == {"google": {"thought_signature": SIGNATURE}}
    assert answered(TOOL_CALL)[1]["choices"][0]["message"]["tool_calls"][0]["id"] != call["id"]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons_are_openais(reason, finish):
    native = json.loads(json.dumps(PLAIN))
    native["candidates"][0]["finishReason"] = reason
    assert answered(native)[1]["choices"][0]["finish_reason"] == finish


def test_a_blocked_prompt_is_one_filtered_choice_without_content():
    _status, answer = answered(BLOCKED)
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None},
            "finish_reason": "content_filter",
        }
    ]
    assert answer["usage"]["prompt_tokens"] == 7


def test_usage_counts_tool_use_prompts_and_audio_and_image_tokens():
    usage = gemini.usage_of(
        {
            "promptTokenCount": 1000,
            "toolUsePromptTokenCount": 50,
            "candidatesTokenCount": 40,
            "thoughtsTokenCount": 10,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": 200},
                {"modality": "AUDIO", "tokenCount": 300},
                {"modality": "IMAGE", "tokenCount": 500},
            ],
            "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 40}],
        }
    )
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        1050,
        50,
        1100,
    )
    assert usage["prompt_tokens_details"]["audio_tokens"] == 300
    assert usage["prompt_tokens_details"]["image_tokens"] == 500
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 10, "audio_tokens": 40}


counts = st.one_of(st.integers(-(2**40), 2**40), st.booleans(), st.none(), st.text(max_size=3))
details = st.lists(
    st.fixed_dictionaries(
        {"modality": st.sampled_from(["TEXT", "AUDIO", "IMAGE", "VIDEO"]), "tokenCount": counts}
    ),
    max_size=4,
)
usage_metadata = st.fixed_dictionaries(
    {},
    optional={
        "promptTokenCount": counts,
        "toolUsePromptTokenCount": counts,
        "cachedContentTokenCount": counts,
        "candidatesTokenCount": counts,
        "thoughtsTokenCount": counts,
        "promptTokensDetails": details,
        "toolUsePromptTokensDetails": details,
        "candidatesTokensDetails": details,
    },
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@fuzz_settings(300)
@given(usage_metadata)
def test_usage_components_are_whole_numbers_within_their_totals(native):
    usage = gemini.usage_of(native)
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    assert usage["total_tokens"] == prompt + completion
    for total, part in [
        (prompt, usage["prompt_tokens_details"]),
        (completion, usage["completion_tokens_details"]),
    ]:
        for value in part.values():
            assert type(value) is int and 0 <= value <= total
    assert min(prompt, completion) >= 0


@fuzz_settings(200)
@given(json_values)
def test_garbage_usage_is_all_zeros_and_a_garbage_answer_never_raises(value):
    if not isinstance(value, dict):
        usage = gemini.usage_of(value)
        assert usage["total_tokens"] == 0
        assert not any(usage["prompt_tokens_details"].values())
    answer = gemini.answer_of(value if isinstance(value, dict) else {"candidates": [value]}, {})
    assert answer["choices"]


@fuzz_settings(200)
@given(st.lists(json_values, max_size=4))
def test_a_garbage_stream_ends_in_chunks_or_a_broken_stream_never_another_error(events):
    raw = Recorded(pieces=[b"data: " + json.dumps(e).encode() + b"\n\n" for e in events])
    try:
        streamed_chunks(gemini.reply_of(raw, {"model": MODEL}, stream=True))
    except UpstreamError as error:
        assert str(error).startswith("stream broke off")


def test_a_200_that_is_not_geminis_json_is_a_502():
    for body in [b"<html>Bad gateway</html>", b'{"error": "no"}', b"[]"]:
        status, answer = answered(None, body=body)
        assert status == 502
        assert answer["error"]["message"] == gemini.UNREADABLE


# Errors


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (
            503,
            UNAVAILABLE,
            (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
        ),
        (429, EXHAUSTED, (429, "RESOURCE_EXHAUSTED", EXHAUSTED["error"]["message"])),
        (
            400,
            KEY_INVALID,
            (401, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
        ),
        (500, [INTERNAL], (500, "INTERNAL", INTERNAL["error"]["message"])),
    ],
)
def test_geminis_errors_take_openais_shape_and_keep_their_status(status, error, expected):
    raw = Recorded(status=status, body=json.dumps(error).encode())
    code, body = read(gemini.reply_of(raw, {"model": MODEL}, stream=True))
    assert (code, body["error"]["code"], body["error"]["message"]) == expected
    assert set(body["error"]) >= {"message", "type", "code"}


def test_an_error_without_json_still_says_what_happened():
    code, body = read(gemini.reply_of(Recorded(status=502, body=b"Bad Gateway"), {}, stream=False))
    assert (code, body["error"]["message"]) == (502, "The upstream provider answered HTTP 502.")
    assert body["error"]["type"] == "server_error"


# Streams


def test_a_stream_becomes_openai_chunks_with_a_usage_chunk_at_the_end():
    chunks = streamed(STREAM_PLAIN)
    assert chunks[-1] == "[DONE]"
    *answer, usage = chunks[:-1]
    assert [c["choices"][0]["delta"] for c in answer] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": " from Gemini"},
        {"content": "!"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in answer][-2:] == [None, "stop"]
    assert {c["id"] for c in chunks[:-1]} == {"chatcmpl-mAitaLmkHPPlz7IPvtfUqQ4"}
    assert {c["object"] for c in chunks[:-1]} == {"chat.completion.chunk"}
    assert usage["choices"] == []
    assert usage["usage"] == gemini.usage_of(PLAIN["usageMetadata"])


def test_a_stream_cut_anywhere_reads_the_same():
    whole = streamed(STREAM_THINKING, size=10_000)
    for size in (1, 3, 64):
        pieces = streamed(STREAM_THINKING, size=size)
        assert [c if c == "[DONE]" else c["choices"] for c in pieces] == [
            c if c == "[DONE]" else c["choices"] for c in whole
        ]


def test_a_streamed_thought_is_reasoning_content_and_the_last_usage_counts():
    chunks = streamed(STREAM_THINKING)
    deltas = [c["choices"][0]["delta"] for c in chunks[:-2]]
    assert deltas[1] == {
        "reasoning_content": STREAM_THINKING[0]["candidates"][0]["content"]["parts"][0]["text"]
    }
    assert "".join(d.get("content", "") for d in deltas) == "The answer is 42."
    usage = chunks[-2]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (2061, 319)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 2048


def test_a_streamed_function_call_is_one_whole_tool_call_delta():
    chunks = streamed(STREAM_TOOL_CALL)
    (call,) = chunks[1]["choices"][0]["delta"]["tool_calls"]
    assert call["index"] == 0 and call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert call["extra_content"] == {"google": {"thought_signature": SIGNATURE}}
    assert chunks[2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert chunks[3]["usage"]["completion_tokens"] == 86


def test_a_stream_without_its_finish_reason_broke_off():
    with pytest.raises(UpstreamError, match="stream broke off"):
        streamed(STREAM_PLAIN[:-1])


def test_an_error_event_breaks_the_stream_without_quoting_it():
    with pytest.raises(
        UpstreamError, match=r"stream broke off: an error event \(INTERNAL\)"
    ) as raised:
        streamed([STREAM_PLAIN[0], INTERNAL])
    assert "internal error" not in str(raised.value)


def test_an_unreadable_event_breaks_the_stream():
    raw = Recorded(pieces=[sse(STREAM_PLAIN[:1]), b'data: {"candid\r\n\r\n', sse(STREAM_PLAIN[1:])])
    with pytest.raises(UpstreamError, match="could not be read"):
        streamed_chunks(gemini.reply_of(raw, {"model": MODEL}, stream=True))


def test_an_event_past_the_size_limit_breaks_the_stream(monkeypatch):
    monkeypatch.setattr(gemini_stream, "MAX_EVENT_BYTES", 1000)
    assert streamed(STREAM_PLAIN, size=900)[-1] == "[DONE]"
    raw = Recorded(pieces=[b"data: " + b"x" * 600, b"y" * 600])
    with pytest.raises(UpstreamError, match="too large"):
        streamed_chunks(gemini.reply_of(raw, {"model": MODEL}, stream=True))
    many_short_lines = Recorded(pieces=[b"data: " + b"x" * 90 + b"\n" for _ in range(20)])
    with pytest.raises(UpstreamError, match="too large"):
        streamed_chunks(gemini.reply_of(many_short_lines, {"model": MODEL}, stream=True))


def test_a_blocked_prompt_streams_one_filtered_choice():
    chunks = streamed([BLOCKED])
    assert chunks[1]["choices"][0]["finish_reason"] == "content_filter"
    assert chunks[-2]["usage"]["prompt_tokens"] == 7


# The simulator's Gemini


@pytest.mark.parametrize("tool_call", [None, ("get_weather", '{"city": "Paris"}')])
def test_the_simulators_answers_read_as_the_counts_it_was_given(tool_call):
    counts = {
        "input": 100,
        "cache_read": 50,
        "cache_write_5m": 0,
        "cache_write_1h": 0,
        "output": 30,
        "reasoning": 12,
    }
    words = ["Hello", "from", "the", "simulator."]
    body = gemini.simulated(MODEL, words, counts, stream=False, tool_call=tool_call)
    status, answer = answered(None, body=body)
    lines = gemini.simulated(MODEL, words, counts, stream=True, tool_call=tool_call)
    chunks = streamed_chunks(gemini.reply_of(Recorded(pieces=lines), {}, stream=True))
    assert status == 200
    for usage in (answer["usage"], chunks[-2]["usage"]):
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (150, 30)
        assert usage["prompt_tokens_details"]["cached_tokens"] == 50
        assert usage["completion_tokens_details"]["reasoning_tokens"] == 12
    message = answer["choices"][0]["message"]
    if tool_call:
        assert message["tool_calls"][0]["function"] == {
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        }
        assert chunks[-3]["choices"][0]["finish_reason"] == "tool_calls"
    else:
        assert message["content"] == "Hello from the simulator."
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-2])
        assert text == "Hello from the simulator."


# Google's SDK reads the fake's answers, so that they are Gemini's


def sdk(fake, key=None):
    return genai.Client(
        api_key=key or fake.key,
        http_options=types.HttpOptions(base_url=fake.root, api_version="v1beta"),
    )


def test_googles_sdk_reads_the_fakes_answers(fake):
    client = sdk(fake)
    answer = client.models.generate_content(model=MODEL, contents="Hello")
    assert answer.text == "Hello from Gemini!"
    assert answer.usage_metadata.total_token_count == 14
    fake.behaviour["answer"] = "thinking"
    answer = client.models.generate_content(model=MODEL, contents="Hello")
    assert answer.text == "The answer is 42."
    assert answer.candidates[0].content.parts[0].thought is True
    assert answer.usage_metadata.cached_content_token_count == 2048
    assert answer.usage_metadata.thoughts_token_count == 312
    fake.behaviour["answer"] = "tool_call"
    answer = client.models.generate_content(model=MODEL, contents="Hello")
    assert (answer.function_calls[0].name, answer.function_calls[0].args) == (
        "get_weather",
        {"city": "Paris"},
    )
    assert answer.candidates[0].content.parts[0].thought_signature
    assert fake.received[-1]["path"] == f"/v1beta/models/{MODEL}:generateContent"


def test_googles_sdk_reads_the_fakes_streams(fake):
    client = sdk(fake)
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="Hello"))
    assert "".join(c.text for c in chunks) == "Hello from Gemini!"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count == 5
    assert fake.received[-1]["query"] == {"alt": "sse"}
    fake.behaviour["answer"] = "tool_call"
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="Hello"))
    assert chunks[0].function_calls[0].name == "get_weather"


def test_googles_sdk_reads_the_fakes_errors(fake):
    wrong_key = sdk(fake, key="AIza-wrong")
    with pytest.raises(genai_errors.ClientError) as raised:
        wrong_key.models.generate_content(model=MODEL, contents="Hello")
    assert (raised.value.code, raised.value.status) == (400, "INVALID_ARGUMENT")
    assert raised.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    client = sdk(fake)
    fake.behaviour["error"] = "unavailable"
    with pytest.raises(genai_errors.ServerError) as raised:
        client.models.generate_content(model=MODEL, contents="Hello")
    assert (raised.value.code, raised.value.status) == (503, "UNAVAILABLE")
    fake.behaviour["error"] = "exhausted"
    with pytest.raises(genai_errors.ClientError) as raised:
        client.models.generate_content(model=MODEL, contents="Hello")
    assert (raised.value.code, raised.value.status) == (429, "RESOURCE_EXHAUSTED")


# The HTTP call


def snapshot(fake, **fields):
    values = {
        "id": 1,
        "name": "gemini",
        "kind": "gemini",
        "base_url": fake.url,
        "key": fake.key,
        "model_map": {},
        "priority": 0,
        "weight": 1,
        "connect_timeout": 5.0,
        "read_timeout": 10.0,
        "simulator": {},
        **fields,
    }
    return ChannelSnapshot(**values)


def call(channel, payload, path="chat/completions", stream=False):
    async def send():
        async with aiohttp.ClientSession() as session:
            reply = await gemini.call(session, channel, path, payload, stream=stream)
            if stream and reply.status == 200:
                return reply.status, [line async for line in reply.lines()]
            return reply.status, json.loads(await reply.body())

    return asyncio.run(send())


def test_the_key_goes_in_its_header_and_the_model_quoted_into_the_path(fake):
    status, _answer = call(snapshot(fake), {"model": "x/../../y?key=1#z", "messages": HELLO})
    assert status == 404  # no such model: but it stayed one path segment, and no query
    sent = fake.received[-1]
    assert sent["path"] == "/v1beta/models/x%2F..%2F..%2Fy%3Fkey=1%23z:generateContent"
    assert (sent["query"], sent["key"]) == ({}, fake.key)
    call(snapshot(fake), {"model": f"models/{MODEL}", "messages": HELLO}, stream=True)
    assert fake.received[-1]["path"] == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert fake.received[-1]["query"] == {"alt": "sse"}


def test_a_refused_key_answers_401_and_other_paths_are_refused_here(fake):
    status, body = call(snapshot(fake, key="AIza-wrong"), {"model": MODEL, "messages": HELLO})
    assert (status, body["error"]["type"]) == (401, "authentication_error")
    status, body = call(snapshot(fake, key=""), {"model": MODEL, "messages": HELLO}, stream=True)
    assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED")
    asked = len(fake.received)
    status, body = call(snapshot(fake), {"model": "embed", "input": "x"}, path="embeddings")
    assert status == 400
    assert body["error"]["message"] == (
        "A Gemini channel serves chat models only: move embed to an OpenAI-compatible channel."
    )
    status, body = call(
        snapshot(fake),
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}],
        },
    )
    assert status == 400 and "file ids" in body["error"]["message"]
    assert len(fake.received) == asked


def test_an_unreachable_channel_is_an_upstream_error(fake):
    fake.stop()
    with pytest.raises(UpstreamError):
        call(snapshot(fake), {"model": MODEL, "messages": HELLO})


def test_the_fake_refuses_fields_gemini_does_not_know(fake):
    status, body = call(snapshot(fake), {"model": MODEL, "messages": HELLO, "max_tokens": 3})
    assert status == 200
    assert fake.received[-1]["payload"] == {
        "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
        "generationConfig": {"maxOutputTokens": 3},
    }
    status, body = call(snapshot(fake), {"model": MODEL, "messages": []})
    assert (status, body["error"]["code"]) == (400, "INVALID_ARGUMENT")
    assert "contents is not specified" in body["error"]["message"]


# Through the gateway, with the official openai client


@pytest.fixture
def gemini_price(db):
    from billing.models import ModelPrice

    return ModelPrice.objects.create(
        model=MODEL,
        vendor="Google",
        model_multiplier=Decimal("0.15"),
        completion_multiplier=Decimal(4),
    )


def gemini_channel(fake, name="gemini", *, models=(MODEL, "text-embedding-3-small"), **fields):
    from billing.models import Line

    channel = Channel(
        name=name, type=Channel.Type.GEMINI, base_url=fake.url, model_names=list(models), **fields
    )
    channel.set_key(fake.key)
    channel.save()
    channel.lines.set(Line.objects.filter(name="default"))
    return channel


@pytest.fixture
def channel(fake, prices, gemini_price, default_line):
    return gemini_channel(fake, priority=10)


@pytest.fixture
def client(live_site, token_and_key, channel):
    _token, key = token_and_key
    return openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)


def logged(request_id):
    return wait_until(lambda: RequestLog.objects.filter(id=request_id).first(), message="log row")


def test_a_chat_completion_is_answered_by_gemini_and_billed(client, fake):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hello from Gemini!"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == MODEL and reply.id == "chatcmpl-mAitaLmkHPPlz7IPvtfUqQ4"
    row = logged(raw.headers["x-request-id"])
    assert (row.status, row.prompt_tokens, row.completion_tokens, row.usage_estimated) == (
        200,
        9,
        5,
        False,
    )
    assert fake.received[-1]["key"] == fake.key


def test_a_stream_is_openai_chunks_with_usage_only_when_asked(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from Gemini!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert (chunks[-1].choices, chunks[-1].usage.prompt_tokens) == ([], 9)
    assert chunks[-1].usage.completion_tokens == 5
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    assert all(c.choices and c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from Gemini!"


def test_tool_calls_go_both_ways_in_geminis_own_shape(client, fake):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER]
    )
    sent = fake.received[-1]["payload"]
    assert sent["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "The current weather in a city.",
                    "parametersJsonSchema": WEATHER["function"]["parameters"],
                }
            ]
        }
    ]
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (tool_call,) = choice.message.tool_calls
    assert (tool_call.function.name, json.loads(tool_call.function.arguments)) == (
        "get_weather",
        {"city": "Paris"},
    )
    assert tool_call.model_extra["extra_content"] == {"google": {"thought_signature": SIGNATURE}}

    reply = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": tool_call.id, "content": '{"temp_c": 21}'},
        ],
        tools=[WEATHER],
    )
    assert reply.choices[0].message.content == "Hello from Gemini!"
    assert fake.received[-1]["payload"]["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": SIGNATURE,
                }
            ],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}],
        },
    ]


def test_a_streamed_tool_call_assembles_in_the_openai_client(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER],
        stream=True,
    )
    calls = [call for c in stream if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1
    assert (calls[0].function.name, calls[0].function.arguments) == (
        "get_weather",
        '{"city": "Paris"}',
    )
    assert calls[0].model_extra["extra_content"]["google"]["thought_signature"] == SIGNATURE


def test_the_system_prompt_and_an_image_arrive_natively(client, fake):
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                ],
            },
        ],
        max_tokens=50,
    )
    sent = fake.received[-1]["payload"]
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": PIXEL}},
            ],
        }
    ]
    assert sent["generationConfig"] == {"maxOutputTokens": 50}


def test_a_thinking_request_reaches_gemini_bounded_by_what_was_held(client, fake, settings):
    settings.GATEWAY_DEFAULT_MAX_TOKENS = 2000
    client.chat.completions.create(model=MODEL, messages=HELLO, reasoning_effort="high")
    assert fake.received[-1]["payload"]["generationConfig"] == {
        "maxOutputTokens": 2000,
        "thinkingConfig": {"thinkingBudget": 1000},
    }


def test_cached_and_thinking_tokens_reach_the_client_and_the_log(client, fake):
    fake.behaviour["answer"] = "thinking"
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
    reply = raw.parse()
    assert reply.usage.prompt_tokens_details.cached_tokens == 2048
    assert reply.usage.completion_tokens_details.reasoning_tokens == 312
    assert reply.choices[0].message.model_extra["reasoning_content"].startswith("**Weighing")
    row = logged(raw.headers["x-request-id"])
    assert (row.prompt_tokens, row.completion_tokens) == (2061, 319)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 2048
    row = logged(raw.headers["x-request-id"])
    assert (row.prompt_tokens, row.completion_tokens, row.usage_estimated) == (2061, 319, False)


@pytest.mark.parametrize("error", ["unavailable", "exhausted"])
def test_an_overloaded_gemini_fails_over_before_the_first_byte(client, fake, upstream, error):
    backup = make_channel(upstream, "backup", models=[MODEL], priority=0)
    fake.behaviour["error"] = error
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
    assert raw.parse().choices[0].message.content == "Hello from upstream!"
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from upstream!"
    assert len(fake.received) == 2 and len(upstream.received) == 2
    row = logged(raw.headers["x-request-id"])
    assert (row.channel_id, row.retries) == (backup.pk, 1)


def test_an_answer_that_is_not_geminis_fails_over(client, fake, upstream):
    make_channel(upstream, "backup", models=[MODEL], priority=0)
    fake.behaviour["junk"] = True
    reply = client.chat.completions.create(model=MODEL, messages=HELLO)
    assert reply.choices[0].message.content == "Hello from upstream!"
    assert len(fake.received) == 1


def test_a_refused_key_disables_the_gemini_channel(client, fake, upstream, channel):
    channel.set_key("AIza-revoked")
    channel.save()
    make_channel(upstream, "backup", models=[MODEL], priority=0)
    reply = client.chat.completions.create(model=MODEL, messages=HELLO)
    assert reply.choices[0].message.content == "Hello from upstream!"
    disabled = wait_until(
        lambda: Channel.objects.filter(pk=channel.pk, auto_disabled_at__isnull=False).first()
    )
    assert "key was refused" in disabled.disabled_reason


def test_geminis_refusal_of_a_request_reaches_the_client(client, fake):
    fake.behaviour["error"] = "bad_request"
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert raised.value.body["code"] == "INVALID_ARGUMENT"
    assert "max_output_tokens must be positive" in raised.value.body["message"]
    fake.behaviour["error"] = "not_found"
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert raised.value.body["code"] == "NOT_FOUND"


def test_a_gemini_channel_refuses_what_is_not_chat(client, fake):
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="text-embedding-3-small", input="Hello")
    assert "A Gemini channel serves chat models only" in raised.value.body["message"]
    assert not fake.received


@pytest.mark.parametrize("behaviour", ["error_event", "break_stream"])
def test_a_stream_gemini_breaks_off_ends_broken(client, fake, behaviour):
    fake.behaviour[behaviour] = True
    chunks = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in client.chat.completions.create(model=MODEL, messages=HELLO, stream=True):
            chunks.append(chunk)
    assert "broke off" in raised.value.message
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("Hello")
    row = wait_until(lambda: RequestLog.objects.first())
    assert row.error_code == "stream_broken"


def test_test_now_answers_ok_against_gemini(fake, channel):
    ok, _latency, detail = channel_test(channel.pk)
    assert (ok, detail) == (True, "answered")
    assert fake.received[-1]["payload"]["generationConfig"] == {"maxOutputTokens": 1}
    fake.behaviour["error"] = "unavailable"
    assert channel_test(channel.pk)[:3:2] == (False, "HTTP 503")


def test_an_answer_without_usage_metadata_reports_no_usage_so_the_gateway_estimates():
    native = {"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "finishReason": "STOP"}]}
    assert "usage" not in gemini.answer_of(native, {"model": MODEL})
