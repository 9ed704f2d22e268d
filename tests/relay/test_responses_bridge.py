"""The Responses bridge's pure conversions, from the examples of OpenAI's documentation
(the Responses API reference, and the text, images, function calling and structured outputs
guides), and the chat answers and streams an OpenAI-compatible channel gives for them."""

import json
import uuid

import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from relay import errors
from relay.bridges import responses as bridge
from relay.metering import Usage

CALL = uuid.UUID("01900000-0000-7000-8000-000000000001")
KEY = CALL.hex
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get current temperature for a given location.",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City and country e.g. Bogotá, Colombia"}
        },
        "required": ["location"],
        "additionalProperties": False,
    },
    "strict": True,
}


def test_text_input():
    request = {
        "model": "gpt-4.1",
        "input": "Tell me a three sentence bedtime story about a unicorn.",
    }
    assert bridge.chat_request(request) == {
        "model": "gpt-4.1",
        "messages": [
            {"role": "user", "content": "Tell me a three sentence bedtime story about a unicorn."}
        ],
    }


def test_image_input():
    url = "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg"
    request = {
        "model": "gpt-4.1-mini",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what's in this image?"},
                    {"type": "input_image", "image_url": url},
                ],
            }
        ],
    }
    assert bridge.chat_request(request)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what's in this image?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


def test_instructions_become_the_first_system_message():
    request = {
        "model": "gpt-4.1",
        "instructions": "Talk like a pirate.",
        "input": "Are semicolons optional in JavaScript?",
    }
    assert bridge.chat_request(request)["messages"] == [
        {"role": "system", "content": "Talk like a pirate."},
        {"role": "user", "content": "Are semicolons optional in JavaScript?"},
    ]


def test_a_function_call_and_its_output_from_the_function_calling_guide():
    call = {
        "type": "function_call",
        "id": "fc_12345xyz",
        "call_id": "call_12345xyz",
        "name": "get_weather",
        "arguments": '{"location":"Paris, France"}',
    }
    request = {
        "model": "gpt-4.1",
        "input": [
            {"role": "user", "content": "What is the weather like in Paris today?"},
            call,
            {"type": "function_call_output", "call_id": "call_12345xyz", "output": "14"},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "name": "get_weather"},
    }
    chat = bridge.chat_request(request)
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_12345xyz",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"location":"Paris, France"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_12345xyz", "content": "14"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": WEATHER_TOOL["description"],
                "parameters": WEATHER_TOOL["parameters"],
                "strict": True,
            },
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_text_said_before_calls_is_one_assistant_message_with_them():
    request = {
        "model": "m",
        "input": [
            {"role": "user", "content": "Hi"},
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}],
            },
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "b", "name": "f", "arguments": "{}"},
        ],
    }
    [_, assistant] = bridge.chat_request(request)["messages"]
    assert assistant["content"] == "Let me look."
    assert [call["id"] for call in assistant["tool_calls"]] == ["a", "b"]


def test_structured_outputs_from_the_guide():
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "date": {"type": "string"},
            "participants": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "date", "participants"],
        "additionalProperties": False,
    }
    request = {
        "model": "gpt-4o-2024-08-06",
        "input": [
            {"role": "system", "content": "Extract the event information."},
            {"role": "user", "content": "Alice and Bob are going to a science fair on Friday."},
        ],
        "text": {
            "format": {"type": "json_schema", "name": "calendar_event", "schema": schema,
                       "strict": True}
        },
    }  # fmt: skip
    assert bridge.chat_request(request)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "calendar_event", "schema": schema, "strict": True},
    }


def test_reasoning_effort_and_limits():
    request = {
        "model": "o4-mini",
        "input": "Write a bash script",
        "reasoning": {"effort": "medium", "summary": "auto"},
        "max_output_tokens": 300,
        "stream": True,
    }
    chat = bridge.chat_request(request)
    assert (chat["reasoning_effort"], chat["max_completion_tokens"], chat["stream"]) == (
        "medium",
        300,
        True,
    )


@pytest.mark.parametrize(
    ("request_", "param", "code"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id", "response_not_stored"),
        ({"conversation": "conv_1"}, "conversation", "response_not_stored"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "response_not_stored"),
        ({"tools": [{"type": "web_search_preview"}]}, "tools", "invalid_request"),
        ({"background": True}, "background", "invalid_request"),
    ],
)
def test_what_needs_a_stored_response_or_openai_is_refused(request_, param, code):
    with pytest.raises(errors.GatewayError) as raised:
        bridge.chat_request({"model": "m", "input": "Hi", **request_})
    assert (raised.value.param, raised.value.code) == (param, code)


# Answers

CHAT_ANSWER = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4.1-2025-04-14",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello! How can I assist you today?",
                "refusal": None,
                "annotations": [],
            },
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 2},
    },
}


REPORTED = Usage(19, 10, False, cache_read_tokens=3, reasoning_tokens=2)


def made(answer, request=None, usage=REPORTED):
    request = request or {"model": "gpt-4.1", "input": "Hi"}
    body = bridge.response(request, answer, call_id=CALL, created_at=1741569952, usage=usage)
    return json.loads(body)


def test_a_chat_answer_as_a_response():
    response = made(CHAT_ANSWER)
    assert response["id"] == f"resp_{KEY}"
    assert (response["object"], response["status"], response["model"]) == (
        "response",
        "completed",
        "gpt-4.1",
    )
    assert response["output"] == [
        {
            "type": "message",
            "id": f"msg_{KEY}_0",
            "status": "completed",
            "role": "assistant",
            "content": [
                {
                    "type": "output_text",
                    "text": "Hello! How can I assist you today?",
                    "annotations": [],
                    "logprobs": [],
                }
            ],
        }
    ]
    assert response["usage"] == {
        "input_tokens": 19,
        "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
        "output_tokens": 10,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 29,
    }
    assert (response["store"], response["previous_response_id"], response["error"]) == (
        False,
        None,
        None,
    )


def test_the_sdk_reads_the_response():
    from openai.types.responses import Response

    response = Response.model_validate(made(CHAT_ANSWER))  # validated, field by field
    assert response.output_text == "Hello! How can I assist you today?"


def test_tool_calls_as_function_call_items():
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
            }
        ],
    }
    answer = {**CHAT_ANSWER, "choices": [{"index": 0, "message": message,
                                          "finish_reason": "tool_calls"}]}  # fmt: skip
    assert made(answer)["output"] == [
        {
            "type": "function_call",
            "id": f"fc_{KEY}_0",
            "call_id": "call_abc",
            "name": "get_weather",
            "arguments": '{"location":"Paris"}',
            "status": "completed",
        }
    ]


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_an_answer_cut_short_is_incomplete(finish, reason):
    answer = {**CHAT_ANSWER, "choices": [{**CHAT_ANSWER["choices"][0], "finish_reason": finish}]}
    response = made(answer)
    assert (response["status"], response["incomplete_details"]) == (
        "incomplete",
        {"reason": reason},
    )


def test_estimated_usage_claims_no_cached_tokens():
    usage = made(CHAT_ANSWER, usage=Usage(30, 9, True))["usage"]
    assert (usage["input_tokens"], usage["input_tokens_details"]["cached_tokens"]) == (30, 0)


@pytest.mark.parametrize("answer", [None, {}, {"choices": "x"}, {"choices": [{"message": 5}]}])
def test_an_answer_of_no_known_shape_is_an_empty_response(answer):
    assert made(answer)["output"] == []


# Streams


def chunk(delta, finish=None):
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def events_of(data):
    found = []
    for block in data.decode().split("\n\n"):
        if block:
            kind, payload = block.split("\n")
            event = json.loads(payload.removeprefix("data: "))
            assert kind == f"event: {event['type']}"
            found.append(event)
    return found


def test_a_text_stream_then_a_call_in_the_responses_events():
    stream = bridge.ResponseStream({"model": "m", "input": "Hi"}, call_id=CALL, created_at=1)
    data = stream.opening()
    data += stream.chunk(chunk({"role": "assistant", "content": ""}))
    data += stream.chunk(chunk({"content": "Hello"}))
    data += stream.chunk(chunk({"content": "!"}))
    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": ""}}  # fmt: skip
    data += stream.chunk(chunk({"tool_calls": [call]}))
    data += stream.chunk(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
    data += stream.chunk(chunk({}, finish="tool_calls"))
    data += stream.chunk({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
    data += stream.finished(Usage(5, 3, False))
    events = events_of(data)
    assert [(e["type"], e.get("output_index")) for e in events] == [
        ("response.created", None),
        ("response.in_progress", None),
        ("response.output_item.added", 0),
        ("response.content_part.added", 0),
        ("response.output_text.delta", 0),
        ("response.output_text.delta", 0),
        ("response.output_text.done", 0),
        ("response.content_part.done", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.done", 1),
        ("response.output_item.done", 1),
        ("response.completed", None),
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:  # each as the SDK's types have it, field by field
        TypeAdapter(ResponseStreamEvent).validate_python(event)
    assert events[0]["response"]["output"] == []  # as it was then, not as it ended
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello!"
    assert final["output"][1]["call_id"] == "call_1"
    assert final["usage"]["total_tokens"] == 8
    assert stream.chunks == 3


def test_a_broken_stream_ends_failed():
    stream = bridge.ResponseStream({"model": "m", "input": "Hi"}, call_id=CALL, created_at=1)
    stream.opening()
    stream.chunk(chunk({"content": "Hel"}))
    events = events_of(stream.failed(Usage(9, 1, True)))
    assert [e["type"] for e in events][-1] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": bridge.BROKEN_OFF}
    assert events[-1]["response"]["usage"]["output_tokens"] == 1
