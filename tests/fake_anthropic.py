"""A local stand-in for Anthropic's Messages API (POST /v1/messages), on 127.0.0.1, in a
thread, answering with recordings in the shapes of Anthropic's API reference
(https://docs.anthropic.com/en/api/messages, .../messages-streaming, .../errors).

It checks the key (`x-api-key`, or a bearer token) and the `anthropic-version` header as
Anthropic does, and refuses with Anthropic's 400 what Anthropic refuses in a request (no
max_tokens, empty text, tool results that answer no tool call or come after text) and, stricter
than Anthropic (which merges them), turns of one role in a row: so that a conversion mistake
shows.
Tests set `behaviour` to pick an answer ("answer": "plain", "cached", "thinking", "tool_use"),
an error status ("status": 529, …), an `event: error` in the middle of a stream
("stream_error"), a stream that stops short ("cut_stream") or has an event too long to read
("huge_delta"), or a body that is no Message ("junk"); and read `received`: (path, the headers
Anthropic reads, the JSON sent).
Given tools and no tool result yet, it answers with the tool_use recording; else with text.
"""

import asyncio
import json
import socket
import threading

from aiohttp import web

MODEL = "claude-haiku-4-5-20251001"
# A thinking block's signature, which Anthropic checks when the block is sent back.
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds1v1mZ+eHwmt4ZPGWr3B"

PLAIN = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 9,
        "server_tool_use": None,
        "service_tier": "standard",
    },
}

# A prompt cached earlier in part (read), and written anew in part, for 5 minutes and 1 hour.
CACHED = {
    "id": "msg_01FcUYbhrKrJoSHoi8Gt6Gvf",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "The contract's term is two years."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 21,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 1800,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
        "output_tokens": 50,
        "service_tier": "standard",
    },
}

# Extended thinking: its tokens are in output_tokens, not reported apart.
THINKING = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [
        {
            "type": "thinking",
            "thinking": "To find the square root of 144, I need a number that times itself is 144.",
            "signature": SIGNATURE,
        },
        {"type": "text", "text": "The square root of 144 is 12."},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 48,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 181,
    },
}

# Two tool calls at once, after a few words.
TOOL_USE = {
    "id": "msg_01Aq9w938a90dw8q7EgfqrTv",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
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
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 472,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 91,
    },
}

ANSWERS = {"plain": PLAIN, "cached": CACHED, "thinking": THINKING, "tool_use": TOOL_USE}


def _start(message, input_tokens, **cache):
    """The message_start event's message: no content yet, output_tokens 1 so far."""
    usage = {"input_tokens": input_tokens, **cache, "output_tokens": 1}
    return {
        "type": "message_start",
        "message": {
            "id": message["id"],
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        },
    }


PING = {"type": "ping"}

STREAMS = {
    "plain": [
        _start(PLAIN, 12, cache_creation_input_tokens=0, cache_read_input_tokens=0),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        PING,
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hi! My"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " name is Claude."},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ],
    # The newer message_delta repeats the input and cache counts with the final output count.
    "cached": [
        _start(
            CACHED,
            21,
            cache_creation_input_tokens=300,
            cache_read_input_tokens=1800,
            cache_creation={"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
        ),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        PING,
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "The contract's term"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " is two years."},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {
                "input_tokens": 21,
                "cache_creation_input_tokens": 300,
                "cache_read_input_tokens": 1800,
                "output_tokens": 50,
            },
        },
        {"type": "message_stop"},
    ],
    "thinking": [
        _start(THINKING, 48, cache_creation_input_tokens=0, cache_read_input_tokens=0),
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {
                "type": "thinking_delta",
                "thinking": "To find the square root of 144, I need a number",
            },
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": " that times itself is 144."},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {
                "type": "signature_delta",
                "signature": SIGNATURE,
            },
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "text_delta", "text": "The square root of 144 is 12."},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 181},
        },
        {"type": "message_stop"},
    ],
    "tool_use": [
        _start(TOOL_USE, 472, cache_creation_input_tokens=0, cache_read_input_tokens=0),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        PING,
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "I'll check the weather in both cities."},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "get_weather",
                "input": {},
            },
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"location": "Paris, Fr'},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": 'ance", "unit": "celsius"}'},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_weather",
                "input": {},
            },
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '{"location": "London, UK",'},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": ' "unit": "celsius"}'},
        },
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 91},
        },
        {"type": "message_stop"},
    ],
}

ERRORS = {
    400: {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "max_tokens: 200000 > 64000, which is the maximum allowed number of "
            "output tokens for claude-haiku-4-5-20251001",
        },
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fa",
    },
    401: {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fb",
    },
    403: {
        "type": "error",
        "error": {
            "type": "permission_error",
            "message": "Your API key does not have permission to use the specified resource.",
        },
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fc",
    },
    404: {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: claude-nonexistent"},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fd",
    },
    429: {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "This request would exceed the rate limit for your organization of "
            "50 requests per minute.",
        },
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fe",
    },
    500: {
        "type": "error",
        "error": {"type": "api_error", "message": "Internal server error"},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Ff",
    },
    529: {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fg",
    },
}
# Anthropic's error event in a stream that already started.
STREAM_ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def sse(event):
    """One event as Anthropic sends it: its name, then its data."""
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def problem(payload):
    """What Anthropic would refuse in a request (some of it), in its words; None if nothing."""
    if not isinstance(payload.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required"
    calls = set()
    for i, message in enumerate(messages):
        if message.get("role") != ("user" if i % 2 == 0 else "assistant"):
            return f"messages.{i}: roles must alternate between user and assistant"
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        seen_other = False
        for j, block in enumerate(blocks):
            if block.get("type") == "text" and not block.get("text"):
                return f"messages.{i}.content.{j}.text: text content blocks must be non-empty"
            if block.get("type") == "tool_result":
                if seen_other:
                    return f"messages.{i}: tool_result blocks must come first"
                if block.get("tool_use_id") not in calls:
                    return f"messages.{i}.content.{j}: unexpected `tool_use_id`"
            else:
                seen_other = True
        calls = {b["id"] for b in blocks if b.get("type") == "tool_use"}
    for i, block in enumerate(payload.get("system") or []):
        if block.get("type") != "text" or not block.get("text"):
            return f"system.{i}: text content blocks must be non-empty"
    return None


def _answer_for(payload):
    """The tool call when tools are offered and none was answered yet; else text."""
    last = payload["messages"][-1].get("content")
    answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
    return "tool_use" if payload.get("tools") and not answered else "plain"


class FakeAnthropic:
    def __init__(self, *, key="sk-ant-api03-fake-secret"):
        self.key = key
        self.behaviour = {}
        self.received = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.root = f"http://127.0.0.1:{self.port}"  # where Anthropic's SDK adds /v1 itself
        self.url = f"{self.root}/v1"  # a channel's base URL
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        self.ready.wait(10)
        return self

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self.messages)
        runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        self.loop.run_until_complete(site.start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    async def messages(self, request):
        payload = json.loads(await request.read())
        headers = {
            name: request.headers.get(name)
            for name in (
                "x-api-key",
                "anthropic-version",
                "anthropic-beta",
                "content-type",
                "authorization",
            )
        }
        self.received.append({"path": request.path, "headers": headers, "payload": payload})
        # The key as `x-api-key`, or as a bearer token, which Anthropic's newer SDKs send.
        if self.key not in (
            request.headers.get("x-api-key"),
            request.headers.get("authorization", "").removeprefix("Bearer "),
        ):
            return web.json_response(ERRORS[401], status=401)
        if not request.headers.get("anthropic-version"):
            error = {
                "type": "invalid_request_error",
                "message": "anthropic-version: header is required",
            }
            return web.json_response({"type": "error", "error": error}, status=400)
        status = self.behaviour.get("status")
        if status:
            return web.json_response(ERRORS[status], status=status)
        mistake = problem(payload)
        if mistake:
            error = {"type": "invalid_request_error", "message": mistake}
            return web.json_response({"type": "error", "error": error}, status=400)
        if self.behaviour.get("junk"):
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        name = self.behaviour.get("answer") or _answer_for(payload)
        if not payload.get("stream"):
            return web.json_response(ANSWERS[name])
        events = STREAMS[name]
        if self.behaviour.get("stream_error"):
            events = [*events[:4], STREAM_ERROR]
        if self.behaviour.get("cut_stream"):
            events = events[:-1]
        if self.behaviour.get("huge_delta"):  # one event past what a client reads as a line
            delta = {"type": "text_delta", "text": "x" * 600_000}
            events = [*events[:2], {"type": "content_block_delta", "index": 0, "delta": delta}]
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for event in events:
            await response.write(sse(event))
        await response.write_eof()
        return response
