"""Anthropic's Messages API as a channel kind: a chat completion request sent as a Messages
request (https://docs.anthropic.com/en/api/messages), and its answer, whole or streamed
(.../messages-streaming), made into a chat completion, so that the gateway handles it as it
handles any OpenAI-compatible channel.

Left out on the way in, as Anthropic has no place for them: n > 1 (refused), logprobs,
seed, penalties, response_format, modalities and audio, `strict` on tools. The assistant's
earlier reasoning is not sent back: Anthropic takes thinking only with the signature that
chat completions do not keep. On the way out: signatures, redacted thinking, citations and
the results of Anthropic's own server tools.

`messages_request` (request.py) makes the request; `chat_completion` and `error_of` (answer.py)
the whole answer and errors; `EventReader` and `ChatChunks` (stream.py) the stream's events.
"""

import base64
import json
import uuid
from collections.abc import AsyncIterator

import aiohttp

from relay.adapters.anthropic.answer import chat_completion, error_of, usage_of
from relay.adapters.anthropic.request import Refused, messages_request
from relay.adapters.anthropic.stream import ChatChunks, EventReader
from relay.adapters.base import LocalReply, Reply, UpstreamError, error_body
from relay.adapters.openai_compatible import HttpReply, post
from relay.config import ChannelSnapshot
from relay.metering import Payload, json_object

__all__ = [
    "Refused",
    "call",
    "chat_completion",
    "error_of",
    "messages_request",
    "reply_of",
    "simulated",
    "usage_of",
]

VERSION = "2023-06-01"
EXTENDED_CACHE_TTL = "extended-cache-ttl-2025-04-11"


async def call(
    session: aiohttp.ClientSession,
    channel: ChannelSnapshot,
    path: str,
    payload: Payload,
    *,
    stream: bool,
) -> Reply:
    if path != "chat/completions":
        return LocalReply(
            400,
            error_body(
                f"An Anthropic channel serves chat models only: move {payload.get('model')} "
                "to an OpenAI-compatible channel.",
                "invalid_request_error",
                "wrong_channel_kind",
            ),
        )
    try:
        request = messages_request(payload)
    except Refused as refused:
        return LocalReply(
            400,
            error_body(
                refused.message, "invalid_request_error", "unsupported_value", refused.param
            ),
        )
    headers = {
        "x-api-key": channel.key,
        "anthropic-version": VERSION,
        "content-type": "application/json",
        "accept": "text/event-stream" if stream else "application/json",
    }
    body = json.dumps(request).encode()
    if b'"ttl": "1h"' in body:  # hour-long cache writes were a beta: asked for by name
        headers["anthropic-beta"] = EXTENDED_CACHE_TTL
    response = await post(session, channel, f"{channel.base_url}/messages", body, headers)
    reply = reply_of(HttpReply(response), payload, stream=stream)
    if not stream and reply.status == 200:
        # Read now, so that an answer we cannot read is a 502 the gateway fails over from.
        await reply.body()
    return reply


def reply_of(raw: Reply, payload: Payload, *, stream: bool) -> Reply:
    """A reply carrying Anthropic's native answer (whole, or its events), as a chat
    completion reply. (The answer names its model and says whether it streams: the request
    is not needed to read it.)"""
    return MessagesReply(raw)


class MessagesReply(Reply):
    """Anthropic's answer, converted as it is read. The status is the vendor's, but for a 200
    whose body is no Message: that is a 502, known once the body is read."""

    def __init__(self, raw: Reply) -> None:
        self.raw = raw
        self.status = raw.status
        self.content: bytes | None = None

    async def body(self) -> bytes:
        if self.content is None:
            native = await self.raw.body()
            if self.status != 200:
                self.content = error_of(self.status, native)
            else:
                message = json_object(native)
                if message is None or not _is_message(message):
                    self.status = 502
                    self.content = error_body(
                        "The upstream provider sent an answer that could not be read.",
                        "server_error",
                        "upstream_unreadable",
                    )
                else:
                    self.content = json.dumps(chat_completion(message)).encode()
        return self.content

    async def lines(self) -> AsyncIterator[bytes]:
        chunks = ChatChunks()
        events = EventReader()
        async for line in self.raw.lines():
            for event in events.feed(line):
                for chunk in chunks.feed(event):
                    yield chunk
        for event in events.end():
            for chunk in chunks.feed(event):
                yield chunk
        if not chunks.ended:
            raise UpstreamError("stream broke off: it ended before message_stop")

    def close(self) -> None:
        self.raw.close()


def _is_message(message: Payload) -> bool:
    return message.get("type") == "message" and isinstance(message.get("content"), list)


def simulated(
    model: str,
    words: list[str],
    counts: dict[str, int],
    *,
    stream: bool,
    tool_call: tuple[str, str] | None = None,
    cut: bool = False,
) -> bytes | list[bytes]:
    """An answer as Anthropic would send it: the Message, or the events of its stream. With
    reasoning counted, a thinking block comes first; with `tool_call`, the answer is a call;
    `cut`: max_tokens cut it."""
    message_id = f"msg_sim{uuid.uuid4().hex[:20]}"
    writes_5m, writes_1h = counts.get("cache_write_5m", 0), counts.get("cache_write_1h", 0)
    usage = {
        "input_tokens": counts.get("input", 0),
        "cache_creation_input_tokens": writes_5m + writes_1h,
        "cache_read_input_tokens": counts.get("cache_read", 0),
        "cache_creation": {
            "ephemeral_5m_input_tokens": writes_5m,
            "ephemeral_1h_input_tokens": writes_1h,
        },
        "output_tokens": counts.get("output", 0),
        "service_tier": "standard",
    }
    blocks: list[Payload] = []
    if counts.get("reasoning", 0) > 0:
        signature = base64.b64encode(message_id.encode()).decode()
        blocks.append(
            {"type": "thinking", "thinking": "Simulated thinking.", "signature": signature}
        )
    if tool_call:
        name, arguments = tool_call
        tool_input = json_object(arguments) or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_sim{uuid.uuid4().hex[:20]}",
                "name": name,
                "input": tool_input,
            }
        )
    else:
        blocks.append({"type": "text", "text": " ".join(words)})
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": "max_tokens" if cut else "tool_use" if tool_call else "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    if not stream:
        return json.dumps(message).encode()
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [_event("message_start", {"message": start}), _event("ping", {})]
    for index, block in enumerate(blocks):
        events += _simulated_block(index, block, words)
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events.append(_event("message_delta", {"delta": delta, "usage": usage}))
    events.append(_event("message_stop", {}))
    return events


def _simulated_block(index: int, block: Payload, words: list[str]) -> list[bytes]:
    opened: Payload
    if block["type"] == "thinking":
        opened = {"type": "thinking", "thinking": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": block["thinking"]},
            {"type": "signature_delta", "signature": block["signature"]},
        ]
    elif block["type"] == "tool_use":
        opened = {**block, "input": {}}
        arguments = json.dumps(block["input"])
        half = len(arguments) // 2
        deltas = [
            {"type": "input_json_delta", "partial_json": ""},
            {"type": "input_json_delta", "partial_json": arguments[:half]},
            {"type": "input_json_delta", "partial_json": arguments[half:]},
        ]
    else:
        opened = {"type": "text", "text": ""}
        pieces = [(" " if i else "") + word for i, word in enumerate(words)]
        deltas = [{"type": "text_delta", "text": piece} for piece in pieces]
    return [
        _event("content_block_start", {"index": index, "content_block": opened}),
        *(_event("content_block_delta", {"index": index, "delta": d}) for d in deltas),
        _event("content_block_stop", {"index": index}),
    ]


def _event(kind: str, data: Payload) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), json.dumps({"type": kind, **data}).encode())
