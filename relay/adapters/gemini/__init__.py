"""Google's Gemini API (generativelanguage, generateContent) as a chat channel.

The gateway speaks OpenAI chat completions to every channel; this package turns such a request
into Gemini's own (request.py), and Gemini's answers and errors (answer.py) and streams
(stream.py) back into OpenAI's shapes, with the usage in the gateway's extended OpenAI form.
Conversions are pure functions; `call` is the HTTP.

Gemini's thinking models sign their function calls: the signature rides in the OpenAI tool call
as `extra_content.google.thought_signature` (Google's own OpenAI-compatibility convention) and
goes back on the same functionCall part when the client sends the call back.
"""

import base64
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp

from relay.adapters.base import LocalReply, Reply, UpstreamError, error_body
from relay.adapters.gemini.answer import (
    UNREADABLE,
    answer_of,
    error_of,
    is_answer,
    usage_of,
)
from relay.adapters.gemini.request import Refused, request_of
from relay.adapters.gemini.stream import ChunkStream, events
from relay.adapters.openai_compatible import HttpReply, post
from relay.config import ChannelSnapshot
from relay.metering import Payload, json_object

__all__ = [
    "UNREADABLE",
    "Refused",
    "answer_of",
    "call",
    "reply_of",
    "request_of",
    "simulated",
    "usage_of",
]

CHAT = "chat/completions"


# Replies


class GeminiReply(Reply):
    """A Reply carrying Gemini's native answer, read as OpenAI's. Its status is Gemini's until
    the body is read (`settle`): an unreadable 200 then turns into a 502, a refused key into
    a 401."""

    def __init__(self, raw: Reply, payload: Payload, stream: bool) -> None:
        self.raw = raw
        self.payload = payload
        self.stream = stream
        self.status = raw.status
        self._body: bytes | None = None

    async def settle(self) -> None:
        """Reads a whole answer (or an error) now, so that its status is final before the
        gateway decides on it; a stream's 200 is left to flow."""
        if not self.stream or self.raw.status != 200:
            await self.body()

    async def body(self) -> bytes:
        if self._body is None:
            content = await self.raw.body()
            if self.raw.status != 200:
                self.status, self._body = error_of(self.raw.status, content)
            else:
                native = json_object(content)
                if native is None or not is_answer(native):
                    self.status = 502
                    self._body = error_body(UNREADABLE, "server_error", "upstream_unreadable")
                else:
                    self._body = json.dumps(answer_of(native, self.payload)).encode()
        return self._body

    async def lines(self) -> AsyncIterator[bytes]:
        chunks = ChunkStream(self.payload)
        async for data in events(self.raw.lines()):
            native = json_object(data)
            if native is None:
                raise UpstreamError("stream broke off: an event that could not be read")
            for line in chunks.feed(native):
                yield line
        for line in chunks.end():
            yield line

    def close(self) -> None:
        self.raw.close()


class EventReply(HttpReply):
    """Gemini's HTTP answer, its stream read in pieces of any size: an event may be longer than
    aiohttp's line limit (a whole function call, an inline image)."""

    async def lines(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as error:
            raise UpstreamError(f"stream broke off: {type(error).__name__}") from None
        finally:
            self.response.release()


def reply_of(raw: Reply, payload: Payload, *, stream: bool) -> GeminiReply:
    """Reads a Reply carrying Gemini's native answer (status, JSON body, SSE lines) as OpenAI's.
    Await its `settle()` before the status is looked at, as `call` does."""
    return GeminiReply(raw, payload, stream)


async def call(
    session: aiohttp.ClientSession,
    channel: ChannelSnapshot,
    path: str,
    payload: Payload,
    *,
    stream: bool,
) -> Reply:
    model = str(payload.get("model") or "")
    if path != CHAT:
        message = (
            f"A Gemini channel serves chat models only: move {model} to an OpenAI-compatible "
            "channel."
        )
        return LocalReply(400, error_body(message, "invalid_request_error", "wrong_channel_kind"))
    try:
        native = request_of(payload)
    except Refused as refusal:
        return LocalReply(400, error_body(str(refusal), "invalid_request_error", "unsupported"))
    # Quoted whole: staff's model map must not add path segments or a query.
    url = f"{channel.base_url}/models/{quote(model.removeprefix('models/'), safe='')}"
    url += ":streamGenerateContent?alt=sse" if stream else ":generateContent"
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
        "x-goog-api-key": channel.key,
    }
    response = await post(session, channel, url, json.dumps(native).encode(), headers)
    reply = reply_of(EventReply(response), payload, stream=stream)
    await reply.settle()
    return reply


# The simulator's Gemini


def simulated(
    model: str,
    words: list[str],
    counts: dict[str, int],
    *,
    stream: bool,
    tool_call: tuple[str, str] | None = None,
    cut: bool = False,
) -> bytes | list[bytes]:
    """A native answer as Gemini sends it: the whole body, or the stream's SSE items (text a
    word a chunk, usage on every chunk and complete on the last, as Gemini does); `cut`:
    maxOutputTokens cut it."""
    reasoning = counts.get("reasoning", 0)
    prompt = sum(
        counts.get(k, 0) for k in ("input", "cache_read", "cache_write_5m", "cache_write_1h")
    )
    candidates = max(counts.get("output", 0) - reasoning, 0)
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + reasoning,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if counts.get("cache_read"):
        usage["cachedContentTokenCount"] = counts["cache_read"]
    if reasoning:
        usage["thoughtsTokenCount"] = reasoning
    if tool_call:
        name, arguments = tool_call
        call = {"name": name, "args": json_object(arguments) or {}}
        pieces = [[{"functionCall": call, "thoughtSignature": _signature()}]]
    else:
        pieces = [[{"text": (" " if i else "") + word}] for i, word in enumerate(words)] or [
            [{"text": ""}]
        ]
    response_id = secrets.token_urlsafe(16)

    def answer(parts: list[dict[str, Any]], last: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        partial = {k: usage[k] for k in ("promptTokenCount", "promptTokensDetails")}
        if last:
            candidate["finishReason"] = "MAX_TOKENS" if cut else "STOP"
        return {
            "candidates": [candidate],
            "usageMetadata": usage if last else {**partial, "totalTokenCount": prompt},
            "modelVersion": model,
            "responseId": response_id,
        }

    if not stream:
        whole = pieces[0] if tool_call else [{"text": " ".join(words)}]
        return json.dumps(answer(whole, True)).encode()
    return [
        b"data: " + json.dumps(answer(piece, i == len(pieces) - 1)).encode() + b"\r\n\r\n"
        for i, piece in enumerate(pieces)
    ]


def _signature() -> str:
    return base64.b64encode(secrets.token_bytes(24)).decode()
