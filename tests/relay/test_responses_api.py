"""The Responses API at /v1/responses, bridged to chat completions: the official openai package
(and Codex's requests, sent as Codex sends them) against a live server."""

import contextlib
import io
import json
import logging
import re
import uuid

import httpx
import openai
import pytest
from django.conf import settings
from django.core.management import call_command
from hypothesis import given
from hypothesis import strategies as st

from billing.models import Account
from logs.models import RequestLog
from relay.models import Channel
from tests.conftest import balance_of, ledger_sum
from tests.relay import test_fuzz as fuzzing
from tests.relay.conftest import wait_until
from tests.relay.test_privacy import redis_contents

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city now.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def logged(request_id):
    return wait_until(lambda: RequestLog.objects.filter(id=request_id).first(), message="log row")


def sent_messages(upstream):
    return upstream.received[-1]["payload"]["messages"]


# Answers, whole and streamed


def test_a_response_is_answered_and_billed_as_the_same_chat_completion(api, upstream, alice):
    raw = api.responses.with_raw_response.create(model="gpt-4o-mini", input="Hello")
    response = raw.parse()
    assert (response.status, response.output_text) == ("completed", "Hello from upstream!")
    assert response.id.startswith("resp_") and response.model == "gpt-4o-mini"
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (12, 5, 17)
    assert sent_messages(upstream) == [{"role": "user", "content": "Hello"}]
    row = logged(raw.headers["x-request-id"])
    chat = api.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
    )
    chat_row = logged(chat.headers["x-request-id"])
    assert (row.endpoint, row.status, row.prompt_tokens, row.completion_tokens) == (
        "responses",
        200,
        12,
        5,
    )
    assert (row.cost, row.breakdown.exact_cost) == (chat_row.cost, chat_row.breakdown.exact_cost)
    assert row.cost == 5 and not row.usage_estimated
    wait_until(lambda: balance_of(alice) == 10_000_000 - 10, message="both charged")
    assert ledger_sum(alice) == balance_of(alice)


def test_instructions_and_settings_reach_the_channel_as_chat_fields(api, upstream):
    response = api.responses.create(
        model="gpt-4o-mini",
        instructions="Answer briefly.",
        input=[
            {"role": "developer", "content": "Speak French."},
            {"role": "user", "content": "Hi"},
        ],
        max_output_tokens=50,
        temperature=0.2,
        text={"format": {"type": "json_object"}},
        reasoning={"effort": "low"},
        metadata={"ticket": "42"},
        store=True,
        truncation="auto",
    )
    payload = upstream.received[-1]["payload"]
    assert payload["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "system", "content": "Speak French."},
        {"role": "user", "content": "Hi"},
    ]
    assert (payload["max_tokens"], payload["temperature"]) == (50, 0.2)
    assert (payload["response_format"], payload["reasoning_effort"]) == (
        {"type": "json_object"},
        "low",
    )
    assert not {"store", "metadata", "truncation", "input", "instructions"} & payload.keys()
    # Echoed as asked, and nothing stored.
    assert (response.instructions, response.max_output_tokens, response.store) == (
        "Answer briefly.",
        50,
        False,
    )
    assert response.metadata == {"ticket": "42"}


def test_a_streamed_response_sends_the_responses_events(api, upstream):
    events = list(api.responses.create(model="gpt-4o-mini", input="Hi", stream=True))
    assert [event.type for event in events] == TEXT_EVENTS
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        "Hello from upstream!"
    )
    final = events[-1].response
    assert (final.status, final.output_text) == ("completed", "Hello from upstream!")
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 4)
    assert upstream.received[-1]["payload"]["stream_options"] == {"include_usage": True}
    row = wait_until(lambda: RequestLog.objects.filter(stream=True).first())
    assert (row.endpoint, row.prompt_tokens, row.completion_tokens, row.usage_estimated) == (
        "responses",
        12,
        4,
        False,
    )
    assert row.cost == 4 and row.ttft_ms is not None  # (12 + 4 × 4) × 0.075 × 2 = 4.2


def test_the_sdk_stream_helper_gets_the_final_response(api):
    with api.responses.stream(model="gpt-4o-mini", input="Hi") as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text == "Hello from upstream!"
    assert final.usage.total_tokens == 16


# Function calls


def test_a_function_call_round_trip(api, upstream):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = api.responses.create(model="gpt-4o-mini", input=[question], tools=[WEATHER])
    [call] = first.output
    assert (call.type, call.name, call.call_id) == ("function_call", "get_weather", "call_fake1")
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.id.startswith("fc_") and call.status == "completed"
    sent_tool = upstream.received[-1]["payload"]["tools"][0]
    assert sent_tool == {
        "type": "function",
        "function": {key: WEATHER[key] for key in ("name", "description", "parameters", "strict")},
    }
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21°C"}
    second = api.responses.create(
        model="gpt-4o-mini", input=[question, *first.output, result], tools=[WEATHER]
    )
    assert second.output_text == "Hello from upstream!"
    assert sent_messages(upstream)[1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_fake1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_fake1", "content": "Sunny, 21°C"},
    ]


def test_a_streamed_function_call(api):
    events = list(
        api.responses.create(
            model="gpt-4o-mini", input="Weather in Paris?", tools=[WEATHER], stream=True
        )
    )
    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert json.loads(events[5].arguments) == {"city": "Paris"}
    [call] = events[-1].response.output
    assert (call.type, call.call_id, call.name) == ("function_call", "call_fake1", "get_weather")
    assert call.id == events[2].item.id == events[6].item.id


def test_a_function_call_sent_whole_in_one_chunk_keeps_its_arguments_once(api, upstream):
    upstream.behaviour["whole_calls"] = True
    with api.responses.stream(
        model="gpt-4o-mini", input="Weather in Paris?", tools=[WEATHER]
    ) as stream:
        answer = stream.get_final_response()
    [call] = answer.output
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})


def test_parallel_calls_become_one_assistant_message(api, upstream):
    calls = [
        {"type": "function_call", "call_id": f"call_{city}", "name": "get_weather",
         "arguments": json.dumps({"city": city})}
        for city in ("Paris", "Oslo")
    ]  # fmt: skip
    outputs = [
        {"type": "function_call_output", "call_id": f"call_{city}", "output": "Sunny"}
        for city in ("Paris", "Oslo")
    ]
    api.responses.create(
        model="gpt-4o-mini",
        input=[{"role": "user", "content": "Paris and Oslo?"}, *calls, *outputs],
        tools=[WEATHER],
        parallel_tool_calls=True,
    )
    payload = upstream.received[-1]["payload"]
    assistant, *tools = payload["messages"][1:]
    assert [call["id"] for call in assistant["tool_calls"]] == ["call_Paris", "call_Oslo"]
    assert [message["tool_call_id"] for message in tools] == ["call_Paris", "call_Oslo"]
    assert payload["parallel_tool_calls"] is True


# Endings: incomplete, failed


def test_an_answer_cut_at_its_length_is_incomplete_and_billed(api, upstream):
    upstream.behaviour["finish_reason"] = "length"
    raw = api.responses.with_raw_response.create(
        model="gpt-4o-mini", input="Hi", max_output_tokens=5
    )
    response = raw.parse()
    assert (response.status, response.incomplete_details.reason) == (
        "incomplete",
        "max_output_tokens",
    )
    assert response.output[0].status == "incomplete"
    assert logged(raw.headers["x-request-id"]).cost == 5
    events = list(api.responses.create(model="gpt-4o-mini", input="Hi", stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    row = wait_until(lambda: RequestLog.objects.filter(stream=True).first())
    assert row.cost == 4


def test_a_stream_broken_after_its_first_byte_fails_and_is_billed_for_what_was_served(
    api, upstream, alice
):
    upstream.behaviour["break_stream"] = True
    events = list(api.responses.create(model="gpt-4o-mini", input="Hi", stream=True))
    assert "response.output_text.delta" in [event.type for event in events]
    failed = events[-1]
    assert (failed.type, failed.response.status) == ("response.failed", "failed")
    assert (failed.response.error.code, failed.response.error.message) == (
        "server_error",
        "The upstream stream broke off. Retry the request.",
    )
    row = wait_until(lambda: RequestLog.objects.filter(stream=True).first())
    assert (row.error_code, row.usage_estimated) == ("stream_broken", True)
    assert row.completion_tokens == 2 and row.cost > 0
    wait_until(lambda: balance_of(alice) == 10_000_000 - row.cost, message="the charge")


# Refusals: nothing stored, nothing charged


def assert_refused_free(alice, raised, status, code, param):
    error = raised.value.body
    assert (raised.value.status_code, error["code"], error["param"]) == (status, code, param)
    assert raised.value.response.headers["x-should-retry"] == "false"
    row = logged(raised.value.response.headers["x-request-id"])
    assert (row.endpoint, row.status, row.cost) == ("responses", status, 0)
    assert Account.objects.get(user=alice).balance == 10_000_000
    return error["message"]


def test_previous_response_id_is_refused_with_why_and_what_to_send(api, upstream, alice):
    with pytest.raises(openai.BadRequestError) as raised:
        api.responses.create(model="gpt-4o-mini", input="And then?", previous_response_id="resp_1")
    message = assert_refused_free(alice, raised, 400, "response_not_stored", "previous_response_id")
    assert "keeps none" in message and "whole conversation as 'input' items" in message
    assert upstream.received == []


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda api: api.responses.retrieve("resp_123"), openai.NotFoundError),
        (lambda api: api.responses.delete("resp_123"), openai.NotFoundError),
        (lambda api: api.responses.cancel("resp_123"), openai.NotFoundError),
        (lambda api: api.responses.input_items.list("resp_123"), openai.NotFoundError),
    ],
    ids=["retrieve", "delete", "cancel", "input-items"],
)
def test_stored_responses_are_refused_with_why(api, alice, call, error):
    with pytest.raises(error) as raised:
        call(api)
    message = assert_refused_free(alice, raised, 404, "response_not_stored", None)
    assert "keeps no responses" in message and "'store' is accepted" in message


def test_a_reference_to_a_stored_item_is_refused(api, alice):
    with pytest.raises(openai.BadRequestError) as raised:
        api.responses.create(
            model="gpt-4o-mini", input=[{"type": "item_reference", "id": "msg_123"}]
        )
    assert_refused_free(alice, raised, 400, "response_not_stored", "input[0]")


@pytest.mark.parametrize(
    "tool", ["web_search", "file_search", "computer_use_preview", "custom", "local_shell"]
)
def test_built_in_tools_are_refused_by_name(api, alice, upstream, tool):
    with pytest.raises(openai.BadRequestError) as raised:
        api.responses.create(model="gpt-4o-mini", input="Hi", tools=[WEATHER, {"type": tool}])
    message = assert_refused_free(alice, raised, 400, "invalid_request", "tools")
    assert f"'{tool}'" in message and "function" in message
    assert upstream.received == []


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"input": None}, "input", "'input' is required"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content", "string or a list"),
        ({"input": [{"role": "robot", "content": "Hi"}]}, "input[0].role", "'developer'"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0]",
            "image_url",
        ),
        ({"input": [{"type": "function_call", "name": "x"}]}, "input[0]", "'call_id'"),
        ({"max_output_tokens": 0}, "max_output_tokens", "positive whole number"),
        ({"tool_choice": {"type": "file_search"}, "tools": [WEATHER]}, "tool_choice", "'auto'"),
        ({"text": {"format": {"type": "yaml"}}}, "text", "json_schema"),
        ({"stream": "yes"}, "stream", "true or false"),
    ],
    ids=["no-input", "content", "role", "file-id", "call", "max-tokens", "tool-choice",
         "format", "stream"],
)  # fmt: skip
def test_bad_input_is_refused_naming_the_field(live_site, token_and_key, channel, alice, fields,
                                               param, says):  # fmt: skip
    _token, key = token_and_key
    body = {"model": "gpt-4o-mini", "input": "Hi", **fields}
    answer = httpx.post(
        f"{live_site.url}/v1/responses", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    error = answer.json()["error"]
    assert (answer.status_code, error["param"]) == (400, param), error
    assert says in error["message"]
    row = logged(answer.headers["x-request-id"])
    assert (row.status, row.cost) == (400, 0)


# Codex


def codex_request(canary="ls"):
    """A request shaped as Codex sends it (codex-rs, wire_api = "responses", store off)."""
    shell = {
        "type": "function",
        "name": "shell",
        "description": "Runs a shell command and returns its output.",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "array", "items": {"type": "string"}},
                "workdir": {"type": ["string", "null"]},
                "timeout_ms": {"type": ["number", "null"]},
            },
            "required": ["command", "workdir", "timeout_ms"],
            "additionalProperties": False,
        },
    }
    arguments = json.dumps(
        {"command": ["bash", "-lc", canary], "workdir": None, "timeout_ms": None}
    )
    return {
        "model": "gpt-4o-mini",
        "instructions": "You are Codex, a coding agent running in a terminal.",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "<permissions>sandboxed</permissions>"}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "<environment_context>cwd</environment_context>"}
                ],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "List the files."}],
            },
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "Listing."}],
                "encrypted_content": "gAAAAB-opaque",
            },
            {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": arguments},
            {"type": "function_call_output", "call_id": "call_1", "output": "README.md\nsrc"},
        ],
        "tools": [shell],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": str(uuid.uuid4()),
    }  # fmt: skip


def sse_events(site, key, body):
    """The events of a streamed answer, read as Codex reads them: `event:` and `data:` lines."""
    events = []
    with httpx.stream(
        "POST",
        f"{site.url}/v1/responses",
        json=body,
        headers={"Authorization": f"Bearer {key}", "Accept": "text/event-stream"},
        timeout=10,
    ) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        for block in answer.read().decode().split("\n\n"):
            if block.strip():
                kind, data = block.split("\n")
                event = json.loads(data.removeprefix("data: "))
                assert kind == f"event: {event['type']}"
                events.append(event)
    return events


def test_a_codex_request_is_served_by_an_openai_compatible_channel(
    live_site, token_and_key, channel, upstream
):
    _token, key = token_and_key
    events = sse_events(live_site, key, codex_request())
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hello from upstream!"
    payload = upstream.received[-1]["payload"]
    assert [m["role"] for m in payload["messages"]] == [
        "system", "system", "user", "user", "assistant", "tool"
    ]  # fmt: skip
    assert payload["messages"][1]["content"] == "<permissions>sandboxed</permissions>"
    assert payload["messages"][4]["tool_calls"][0]["id"] == "call_1"
    assert payload["tools"][0]["function"]["strict"] is True
    assert (payload["parallel_tool_calls"], payload["reasoning_effort"]) == (False, "medium")
    assert "gAAAAB-opaque" not in json.dumps(payload)  # reasoning items are not passed on


@pytest.fixture
def simulator_only(live_site, token_and_key, prices, default_line):
    channel = Channel(name="simulated", type=Channel.Type.SIMULATOR, model_names=["gpt-4o-mini"])
    channel.save()
    channel.lines.set([default_line])
    return channel


def test_a_codex_request_is_served_by_a_simulator_channel(live_site, token_and_key, simulator_only):
    _token, key = token_and_key
    events = sse_events(live_site, key, codex_request())
    final = events[-1]["response"]
    assert (events[-1]["type"], final["status"]) == ("response.completed", "completed")
    assert final["output"][0]["content"][0]["text"].startswith("This is a simulated answer")
    assert final["usage"]["output_tokens"] == 24
    row = wait_until(lambda: RequestLog.objects.filter(endpoint="responses").first())
    assert (row.status, row.completion_tokens, row.usage_estimated) == (200, 24, False)


# Privacy


def test_a_canary_in_a_response_request_and_its_answer_appears_nowhere(
    api, upstream, caplog, live_site, token_and_key
):
    caplog.set_level(logging.DEBUG)
    canary = f"canary-{uuid.uuid4().hex}"
    upstream.behaviour["echo"] = True  # the answer repeats the messages: the canary comes back
    answer = api.responses.create(
        model="gpt-4o-mini",
        instructions=f"Keep {canary}",
        input=[{"role": "user", "content": canary}],
        tools=[{**WEATHER, "description": canary}],
        metadata={"note": canary},
        user=canary,
    )
    assert canary in answer.output_text and answer.metadata == {"note": canary}
    streamed = list(api.responses.create(model="gpt-4o-mini", input=canary, stream=True))
    assert canary in streamed[-1].response.output_text
    _token, key = token_and_key
    sse_events(live_site, key, codex_request(canary))
    upstream.behaviour["status"] = 400  # the channel's refusal quotes the request
    with contextlib.suppress(openai.BadRequestError):
        api.responses.create(model="gpt-4o-mini", input=canary)
    with contextlib.suppress(openai.BadRequestError):
        api.responses.create(model="gpt-4o-mini", input=canary, previous_response_id=canary)
    wait_until(lambda: RequestLog.objects.count() == 5)
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    journal = b"".join(p.read_bytes() for p in settings.GATEWAY_JOURNAL_DIR.glob("*"))
    assert journal, "the journal holds the requests"
    stores = {
        "the database": dump.getvalue().encode(),
        "the journal": journal,
        "the log output": caplog.text.encode(),
        "Redis": redis_contents() if settings.REDIS_URL else b"",
    }
    for where, content in stores.items():
        assert canary.encode() not in content, f"the canary is in {where}"


# Fuzzing the Responses parser: over HTTP, as tests/relay/test_fuzz.py does for chat

probe, hand_flush = (
    fuzzing.probe,
    fuzzing.hand_flush,
)  # its fixtures: a live server, flushed by hand
VALID = {"model": "gpt-4o-mini", "input": "Hello"}
# The fields the bridge reads, each with values it must refuse as that field's fault.
not_null = fuzzing.not_a_string.filter(lambda value: value is not None)
not_a_list = not_null.filter(lambda value: not isinstance(value, list)) | fuzzing.any_text
not_a_bool = not_null.filter(lambda value: not isinstance(value, bool)) | fuzzing.any_text
not_an_object = not_null.filter(lambda value: not isinstance(value, dict))
not_a_number = (
    st.booleans() | fuzzing.any_text | st.lists(fuzzing.scalars, max_size=2)
    | st.dictionaries(fuzzing.any_text, fuzzing.scalars, max_size=2)
)  # fmt: skip
not_a_str = not_null.filter(lambda value: not isinstance(value, str))
# Lists and objects where a name belongs: no set or dict lookup of the bridge may take them.
unhashable = st.lists(fuzzing.scalars, min_size=1, max_size=2) | st.dictionaries(
    fuzzing.any_text, fuzzing.scalars, min_size=1, max_size=2
)
not_a_name = unhashable | not_a_str
bad_part = (
    st.fixed_dictionaries({"type": unhashable})
    | not_an_object
    | st.fixed_dictionaries(
        {"type": st.sampled_from(["input_file", "input_audio", "x"]) | not_a_name}
    )
    | st.fixed_dictionaries({"type": st.just("input_text"), "text": not_a_str})
    | st.fixed_dictionaries({"type": st.just("input_image"), "file_id": fuzzing.any_text})
    | st.fixed_dictionaries({"type": st.just("input_image"), "image_url": not_a_str})
)
bad_item = st.one_of(
    not_an_object,
    st.fixed_dictionaries({"role": not_a_name | st.sampled_from(["tool", "robot", ""]),
                           "content": st.just("Hi")}),
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                           "content": not_a_list.filter(lambda v: not isinstance(v, str))}),
    st.fixed_dictionaries({"role": st.just("user"), "content": st.lists(bad_part, min_size=1,
                                                                        max_size=2)}),
    st.fixed_dictionaries({"type": st.just("function_call"), "call_id": not_a_str | st.just(""),
                           "name": st.just("f"), "arguments": st.just("{}")}),
    st.fixed_dictionaries({"type": st.just("function_call"), "call_id": st.just("c"),
                           "name": st.just("f"), "arguments": not_a_str}),
    st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": st.just("c"),
                           "output": not_a_str.filter(lambda v: not isinstance(v, list))}),
    st.fixed_dictionaries({"type": st.sampled_from(["item_reference", "web_search_call",
                                                    "computer_call", "x"]) | not_a_name}),
)  # fmt: skip
bad_items = st.builds(
    lambda bad, good: [*good, *bad],
    st.lists(bad_item, min_size=1, max_size=2),
    st.lists(st.just({"role": "user", "content": "Hi"}), max_size=1),
)
WRONG = {
    "model": fuzzing.not_a_string | st.text(" \t\r\n", max_size=3),
    "input": st.sampled_from([None, "", []])
    | not_a_list.filter(lambda v: not isinstance(v, str))
    | bad_items,
    "instructions": not_a_str,
    "tools": not_a_list
    | st.lists(
        st.sampled_from([{"type": "web_search"}, {"type": "file_search"}, {"type": "function"},
                         {"type": "function", "name": "f", "parameters": "no"}])
        | st.fixed_dictionaries({"type": not_a_name})
        | not_an_object,
        min_size=1, max_size=2,
    ),
    "tool_choice": not_null.filter(lambda v: v not in ("auto", "none", "required")) | unhashable
    | st.fixed_dictionaries({"type": st.sampled_from(["web_search", "file_search", "function"])}),
    "parallel_tool_calls": not_a_bool,
    "max_output_tokens": fuzzing.not_a_positive_whole_number,
    "temperature": not_a_number,
    "top_p": not_a_number,
    "stream": not_a_bool,
    "store": not_a_bool,
    "text": not_an_object
    | st.builds(lambda kind: {"format": {"type": kind}}, fuzzing.any_text.filter(
        lambda kind: kind not in ("text", "json_object")))
    | st.builds(lambda verbosity: {"verbosity": verbosity}, not_a_str),
    "reasoning": not_an_object.filter(lambda v: v is not None)
    | st.builds(lambda effort: {"effort": effort}, not_a_str),
    "metadata": not_an_object | st.dictionaries(fuzzing.any_text, not_a_str, min_size=1),
    "truncation": not_null.filter(lambda v: v not in ("auto", "disabled")) | unhashable,
    "include": not_a_list | st.lists(not_a_str, min_size=1, max_size=2),
    "previous_response_id": not_null | fuzzing.any_text,
    "conversation": not_null | fuzzing.any_text,
    "background": st.just(True),
    "prompt": not_null | fuzzing.any_text,
    "user": not_a_str,
    "safety_identifier": not_a_str,
    "prompt_cache_key": not_a_str,
}  # fmt: skip
FIELDS = set(WRONG)


@st.composite
def one_wrong_field(draw):
    """(payload, field): a valid request but for one field the bridge reads."""
    payload = {**VALID, "tools": draw(st.sampled_from([None, [WEATHER]]))}
    payload["stream"] = draw(st.sampled_from([None, False, True]))
    noise = draw(st.dictionaries(fuzzing.any_text.filter(lambda k: k not in FIELDS),
                                 fuzzing.json_values, max_size=2))  # fmt: skip
    field = draw(st.sampled_from(sorted(WRONG)))
    payload = {**noise, **payload, field: draw(WRONG[field].filter(fuzzing.is_json))}
    return payload, field


# Values of any JSON shape in the fields the bridge reads, items made of the keys it looks for.
item_keys = st.sampled_from(
    ["type", "role", "content", "call_id", "name", "arguments", "output", "text", "image_url",
     "file_id", "id", "status", "detail"]
)  # fmt: skip
words = st.sampled_from(
    ["message", "user", "assistant", "developer", "system", "function_call",
     "function_call_output", "reasoning", "input_text", "output_text", "input_image", "refusal",
     "function", "auto", "json_schema", "json_object", "text", "x"]
)  # fmt: skip
shaped = st.recursive(
    fuzzing.scalars | words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(item_keys | words, inner,
                                                                max_size=4),
    max_leaves=10,
)  # fmt: skip


@st.composite
def odd_requests(draw):
    payload = dict(VALID)
    for field in draw(st.lists(st.sampled_from(sorted(FIELDS - {"model"})), max_size=4)):
        payload[field] = draw(shaped)
    return payload


def test_one_wrong_field_of_a_response_request_is_refused_by_name(probe):
    @fuzzing.FUZZ
    @given(case=one_wrong_field(), ascii_only=st.booleans())
    def run(case, ascii_only):
        payload, field = case
        before = probe.state()
        response = probe.send("POST", "/v1/responses", fuzzing.as_utf8_json(payload, ascii_only))
        error = probe.refused(response, before)
        assert response.status_code == 400, error
        assert re.split(r"[\[.]", error["param"] or "")[0] == field, (field, error)

    run()
    probe.nothing_spent_in_the_end()


def test_any_response_request_is_refused_or_answered_and_billed_never_a_500(probe):
    @fuzzing.FUZZ
    @given(payload=odd_requests())
    def run(payload):
        before = probe.state()
        response = probe.send("POST", "/v1/responses", fuzzing.as_utf8_json(payload, True))
        if response.status_code != 200:
            probe.refused(response, before, leases=True)
            return
        probe.statuses["200, billed"] += 1
        streamed = response.headers["content-type"].startswith("text/event-stream")
        if streamed:
            last = json.loads(response.text.rstrip().rsplit("\n", 1)[-1].removeprefix("data: "))
            assert last["type"] == "response.completed", last
        else:
            assert response.json()["status"] == "completed"
        probe.write_logs()
        after = probe.state()
        row = RequestLog.objects.get(id=response.headers["x-request-id"])
        assert after[4] == before[4] + 1, "the upstream was not asked exactly once"
        assert (row.status, row.cost, row.usage_estimated) == (200, 4 if streamed else 5, False)
        assert after[0] == before[0] - row.cost, (before, after, row.cost)

    run()


def test_malformed_input_items_are_refused_by_name(probe):
    """The input items alone, where most of the bridge's reading is."""

    @fuzzing.FUZZ
    @given(value=bad_items.filter(fuzzing.is_json), stream=st.booleans())
    def run(value, stream):
        before = probe.state()
        payload = {**VALID, "input": value, "stream": stream}
        response = probe.send("POST", "/v1/responses", fuzzing.as_utf8_json(payload, True))
        error = probe.refused(response, before)
        assert response.status_code == 400, error
        assert re.split(r"[\[.]", error["param"] or "")[0] == "input", error

    run()
    probe.nothing_spent_in_the_end()
