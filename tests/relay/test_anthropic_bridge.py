"""The Messages ↔ chat completions bridge as pure functions, on the examples of Anthropic's
documentation (docs.anthropic.com: Messages, tool use, vision, streaming)."""

import json

import pytest

from relay.adapters import for_channel
from relay.bridges import anthropic as bridge
from relay.config import ChannelSnapshot
from relay.errors import GatewayError
from relay.metering import Usage

MODEL = "claude-sonnet-4-5"


def channel_of(kind):
    return ChannelSnapshot(1, "c", kind, "", "", {}, 0, 1, 1.0, 1.0, {})


def convert(**request):
    return bridge.chat_request({"model": MODEL, "max_tokens": 1024, **request})


def refusal(**request):
    with pytest.raises(GatewayError) as raised:
        bridge.chat_request({"model": MODEL, **request})
    assert raised.value.status == 400
    return raised.value.message


# The request


def test_the_basic_example():
    chat = convert(messages=[{"role": "user", "content": "Hello, Claude"}])
    assert chat == {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, Claude"}],
    }


def test_a_system_prompt_as_blocks_keeps_its_cache_breakpoint_for_the_channels_that_read_it():
    chat = convert(
        system=[
            {"type": "text", "text": "You are Claude Code."},
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[{"role": "user", "content": "Hi"}],
    )
    assert chat["messages"][0] == {
        "role": "system",
        "content": [
            {"type": "text", "text": "You are Claude Code."},
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        ],
    }
    assert chat[bridge.CACHE_MARKS] is True
    # An OpenAI-compatible channel gets one system message of plain text, and no mark.
    plain = for_channel(chat, channel_of("openai"), stream=False)
    assert plain["messages"][0] == {
        "role": "system",
        "content": "You are Claude Code.\n\nBe brief.",
    }
    assert bridge.CACHE_MARKS not in plain
    native = for_channel(chat, channel_of("anthropic"), stream=False)
    assert native["messages"][0] == chat["messages"][0] and bridge.CACHE_MARKS not in native


def test_a_request_without_breakpoints_is_not_marked():
    chat = convert(system="Be brief.", messages=[{"role": "user", "content": "Hi"}])
    assert bridge.CACHE_MARKS not in chat
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}


def test_sampling_and_stop_sequences_carry_over_and_anthropic_only_fields_are_dropped():
    chat = convert(
        messages=[{"role": "user", "content": "Hi"}],
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
        thinking={"type": "enabled", "budget_tokens": 2000},
        stream=True,
    )
    assert chat == {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "stream": True,
    }


def test_images_base64_and_url_become_image_url_parts():
    chat = convert(
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4A"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                    {"type": "text", "text": "Describe these images."},
                ],
            }
        ]
    )
    assert chat["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4A"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
        {"type": "text", "text": "Describe these images."},
    ]


WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


def test_tools_become_functions_and_tool_choice_maps():
    chat = convert(
        messages=[{"role": "user", "content": "Weather in SF?"}],
        tools=[{**WEATHER, "cache_control": {"type": "ephemeral"}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": WEATHER["description"],
            },
        }
    ]
    assert (chat["tool_choice"], chat["parallel_tool_calls"]) == ("required", False)
    for choice, expected in [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ]:
        chat = convert(
            messages=[{"role": "user", "content": "x"}], tools=[WEATHER], tool_choice=choice
        )
        assert chat["tool_choice"] == expected


def test_server_tools_are_left_out():
    chat = convert(
        messages=[{"role": "user", "content": "Search"}],
        tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}, WEATHER],
        tool_choice={"type": "tool", "name": "web_search"},
    )
    assert [tool["function"]["name"] for tool in chat["tools"]] == ["get_weather"]
    assert "tool_choice" not in chat


def test_a_tool_use_round_trip_with_parallel_calls_and_thinking():
    chat = convert(
        messages=[
            {"role": "user", "content": "Weather in SF and NYC?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Two calls.", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "abc"},
                    {"type": "text", "text": "I'll check both."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"location": "SF"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_2",
                        "name": "get_weather",
                        "input": {"location": "NYC"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15 degrees"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "20 degrees"}],
                        "is_error": False,
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
            },
        ],
        tools=[WEATHER],
    )
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "I'll check both.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "SF"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "NYC"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "15 degrees"},
        {
            "role": "tool",
            "tool_call_id": "toolu_2",
            "content": [
                {"type": "text", "text": "20 degrees", "cache_control": {"type": "ephemeral"}}
            ],
        },
    ]
    plain = for_channel(chat, channel_of("openai"), stream=False)
    assert plain["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "toolu_2",
        "content": "20 degrees",
    }


def test_text_after_tool_results_follows_them_as_the_users():
    chat = convert(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1"},
                    {"type": "text", "text": "And now?"},
                ],
            }
        ]
    )
    assert chat["messages"] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": ""},
        {"role": "user", "content": "And now?"},
    ]


def test_a_turn_of_thinking_alone_is_left_out():
    chat = convert(
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}]},
        ]
    )
    assert chat["messages"] == [{"role": "user", "content": "Hi"}]


def test_a_conversation_of_thinking_alone_is_refused_before_it_is_forwarded():
    says = refusal(
        max_tokens=10,
        messages=[{"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}]}],
    )
    assert "nothing for the model to answer" in says


def test_a_tool_result_that_is_an_error_says_so_to_the_model():
    chat = convert(
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": "timeout",
                        "is_error": True,
                    }
                ],
            },
        ]
    )
    assert chat["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": "The tool reported an error:\ntimeout",
    }


def test_count_tokens_needs_no_max_tokens():
    chat = bridge.chat_request(
        {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}, counting=True
    )
    assert "max_tokens" not in chat


@pytest.mark.parametrize(
    ("request_fields", "says"),
    [
        ({"messages": [{"role": "user", "content": "Hi"}]}, "'max_tokens' is required"),
        (
            {"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
            "positive whole number",
        ),
        ({"max_tokens": 10}, "'messages' is required"),
        ({"max_tokens": 10, "messages": "Hi"}, "'messages' is required"),
        (
            {"max_tokens": 10, "messages": [{"role": "system", "content": "x"}]},
            "top-level 'system'",
        ),
        ({"max_tokens": 10, "messages": [{"role": "user", "content": 5}]}, "'messages[0].content'"),
        (
            {"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "“video”",
        ),
        (
            {"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "tool_use"}]}]},
            "“tool_use”",
        ),
        (
            {
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ],
            },
            "base64",
        ),
        (
            {
                "max_tokens": 10,
                "messages": [{"role": "user", "content": [{"type": "tool_result"}]}],
            },
            "'tool_use_id'",
        ),
        (
            {
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}],
                    }
                ],
            },
            "must be an object",
        ),
        (
            {"max_tokens": 10, "messages": [{"role": "user", "content": "x"}], "system": 5},
            "'system' must be",
        ),
        (
            {
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"name": "f"}],
            },
            "'input_schema'",
        ),
        (
            {
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "x"}],
                "tool_choice": {"type": "tool", "name": "g"},
            },
            "'tool_choice.name'",
        ),
        (
            {
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "x"}],
                "stop_sequences": "END",
            },
            "list of strings",
        ),
        (
            {
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "x"}],
                "temperature": "hot",
            },
            "a number",
        ),
        (
            {"max_tokens": 10, "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            "true or false",
        ),
    ],
)
def test_mistakes_are_refused_saying_what_to_send(request_fields, says):
    assert says in refusal(**request_fields)


# The answer

CHAT_ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi! My name is Claude."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 8},
}


NO_CACHE = {
    "cache_read_input_tokens": 0,
    "cache_creation_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
}


def answer(choice=None, *, chat=None):
    body = dict(CHAT_ANSWER, choices=[choice] if choice else CHAT_ANSWER["choices"])
    return bridge.message(
        json.dumps(body).encode(), chat or {"model": MODEL}, "msg_1", Usage(10, 8, False)
    )


def test_the_billed_usage_counts_cache_reads_and_writes_apart_as_anthropic_does():
    usage = Usage(100, 8, False, cache_read_tokens=60, cache_write_5m_tokens=25,
                  cache_write_1h_tokens=5)  # fmt: skip
    counted = bridge.message(json.dumps(CHAT_ANSWER).encode(), {"model": MODEL}, "m", usage)
    assert counted["usage"] == {
        "input_tokens": 10,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 30,
        "cache_creation": {"ephemeral_5m_input_tokens": 25, "ephemeral_1h_input_tokens": 5},
        "output_tokens": 8,
    }


def test_a_text_answer_is_a_message_with_the_billed_usage():
    assert answer() == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Hi! My name is Claude."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": NO_CACHE | {"input_tokens": 10, "output_tokens": 8},
    }


def test_tool_calls_are_tool_use_blocks():
    message = answer(
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "SF"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{not json"},
                    },
                ],
            },
            "finish_reason": "tool_calls",
        }
    )
    assert message["content"] == [
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"location": "SF"}},
        {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("stop", "end_turn"),
        (None, "end_turn"),
    ],
)
def test_finish_reasons_map_to_stop_reasons(finish, stop_reason):
    choice = dict(CHAT_ANSWER["choices"][0], finish_reason=finish)
    assert answer(choice)["stop_reason"] == stop_reason


def test_a_stop_sequence_shows_where_the_channel_names_it():
    choice = dict(CHAT_ANSWER["choices"][0], stop_reason="END")
    message = answer(choice, chat={"model": MODEL, "stop": ["END"]})
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")


# The stream


def events_of(data):
    """[(event, data)] of an SSE byte string."""
    found = []
    for block in data.decode().split("\n\n"):
        if block:
            kind, payload = block.split("\n")
            assert kind.startswith("event: ") and payload.startswith("data: ")
            found.append((kind[7:], json.loads(payload[6:])))
    assert all(data["type"] == kind for kind, data in found)
    return found


def chunk(delta=None, finish=None, usage=None):
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + json.dumps({"choices": choices, "usage": usage}).encode() + b"\n"


def test_a_text_stream_becomes_anthropics_events():
    stream = bridge.MessageStream({"model": MODEL}, "msg_1", 7)
    out = stream.start()
    for line in [
        chunk({"role": "assistant", "content": ""}),
        b"\n",
        chunk({"content": "Hello"}),
        chunk({"content": "!"}),
        chunk({}, "stop"),
        chunk(usage={"prompt_tokens": 9, "completion_tokens": 2}),
        b"data: [DONE]\n",
    ]:
        out += stream.feed(line)
    assert stream.usage == {"prompt_tokens": 9, "completion_tokens": 2}
    out += stream.end(Usage(9, 2, False))
    events = events_of(out)
    assert [kind for kind, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"]["usage"] == {"input_tokens": 7, "output_tokens": 0}
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "Hello"}
    assert events[6][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": NO_CACHE | {"input_tokens": 9, "output_tokens": 2},
    }


def test_parallel_tool_calls_stream_as_tool_use_blocks_after_the_text():
    stream = bridge.MessageStream({"model": MODEL}, "msg_1", 7)
    out = b""
    for line in [
        chunk({"content": "Checking."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"location":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "SF"}'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "function": {"name": "get_weather", "arguments": '{"location": "NYC"}'},
                    }
                ]
            }
        ),
        chunk({}, "tool_calls"),
    ]:
        out += stream.feed(line)
    out += stream.end(Usage(9, 20, False))
    events = events_of(out)
    starts = [data["content_block"] for kind, data in events if kind == "content_block_start"]
    assert starts == [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}},
        {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {}},
    ]
    arguments = {}
    for kind, data in events:
        if kind == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
            arguments[data["index"]] = (
                arguments.get(data["index"], "") + data["delta"]["partial_json"]
            )
    assert {i: json.loads(text) for i, text in arguments.items()} == {
        1: {"location": "SF"},
        2: {"location": "NYC"},
    }
    assert [data["index"] for kind, data in events if kind == "content_block_stop"] == [0, 1, 2]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_tool_calls_ended_as_a_plain_stop_are_still_tool_use():
    """Some channels end a turn of tool calls with "stop": the client must still run them."""
    call = {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    assert answer({"index": 0, "message": message, "finish_reason": "stop"})["stop_reason"] == (
        "tool_use"
    )
    stream = bridge.MessageStream({"model": MODEL}, "msg_1", 7)
    stream.feed(chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f"}}]}))
    stream.feed(chunk({}, "stop"))
    assert events_of(stream.end(Usage(1, 1, False)))[-2][1]["delta"]["stop_reason"] == "tool_use"
