"""Gemini's stream (streamGenerateContent?alt=sse) read into OpenAI chat chunks."""

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from relay.adapters.base import UpstreamError
from relay.adapters.gemini.answer import (
    answer_id,
    blocked_finish,
    choice_index,
    finish_reason_of,
    model_of,
    tool_call_of,
    usage_of,
)
from relay.adapters.gemini.untrusted import list_of, object_of
from relay.metering import Payload

# The most a single stream event may hold before the stream counts as broken.
MAX_EVENT_BYTES = 64 * 1024 * 1024


class ChunkStream:
    """Gemini's stream events (each a partial generateContent response) as OpenAI chat chunks:
    a role chunk per choice, text, reasoning and whole tool calls as deltas, a finish chunk per
    choice; at the end the usage chunk (from the last usageMetadata) and `data: [DONE]`."""

    def __init__(self, payload: Payload) -> None:
        self.payload = payload
        self.id = ""
        self.model = ""
        self.created = int(time.time())
        self.started: set[int] = set()
        self.finished: set[int] = set()
        self.calls: dict[int, int] = {}  # choice index → tool calls so far
        self.usage: object = None

    def feed(self, native: dict[str, Any]) -> list[bytes]:
        if "error" in native:  # Gemini's error event; its message stays out of our logs
            status = object_of(native["error"]).get("status")
            named = status[:40] if isinstance(status, str) and status else "no status"
            raise UpstreamError(f"stream broke off: an error event ({named})")
        self.id = self.id or answer_id(native)
        self.model = self.model or model_of(native, self.payload)
        if native.get("usageMetadata") is not None:
            self.usage = native["usageMetadata"]
        chunks = []
        candidates = [c for c in list_of(native.get("candidates")) if isinstance(c, dict)]
        for position, candidate in enumerate(candidates):
            index = choice_index(candidate, position)
            chunks += self._start(index)
            for part in list_of(object_of(candidate.get("content")).get("parts")):
                chunks += self._part(index, object_of(part))
            if candidate.get("finishReason"):
                finish = finish_reason_of(candidate["finishReason"], index in self.calls)
                chunks.append(self._chunk(index, {}, finish))
                self.finished.add(index)
        if not candidates and blocked_finish(native) and 0 not in self.finished:
            chunks += self._start(0)
            chunks.append(self._chunk(0, {}, "content_filter"))
            self.finished.add(0)
        return chunks

    def _start(self, index: int) -> list[bytes]:
        if index in self.started:
            return []
        self.started.add(index)
        return [self._chunk(index, {"role": "assistant", "content": ""})]

    def _part(self, index: int, part: dict[str, Any]) -> list[bytes]:
        if isinstance(part.get("functionCall"), dict):
            position = self.calls.get(index, 0)
            self.calls[index] = position + 1
            call = {"index": position, **tool_call_of(part)}
            return [self._chunk(index, {"tool_calls": [call]})]
        text = part.get("text")
        if not isinstance(text, str) or not text:
            return []
        field = "reasoning_content" if part.get("thought") is True else "content"
        return [self._chunk(index, {field: text})]

    def end(self) -> list[bytes]:
        """The usage chunk and [DONE]; a stream without its finish reason broke off."""
        if not self.finished or self.started - self.finished:
            raise UpstreamError("stream broke off: it ended before its finish reason")
        if not isinstance(self.usage, dict):  # no count: the gateway estimates
            return [b"data: [DONE]\n\n"]
        return [self._line({"choices": [], "usage": usage_of(self.usage)}), b"data: [DONE]\n\n"]

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._line({"choices": [{"index": index, "delta": delta, "finish_reason": finish}]})

    def _line(self, fields: dict[str, Any]) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            **fields,
        }
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


async def events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The data of each server-sent event, from a body cut anywhere (lines or bigger pieces)."""
    buffer, data = bytearray(), list[bytes]()
    held = 0  # bytes of the event read so far, in `data` and `buffer`
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) + held > MAX_EVENT_BYTES:
            raise UpstreamError("stream broke off: an event too large to read")
        if b"\n" not in chunk:  # a long event's middle: not scanned again and again
            continue
        *lines, rest = bytes(buffer).split(b"\n")
        buffer = bytearray(rest)
        for line in lines:
            line = line.rstrip(b"\r")
            if not line:
                if data:
                    yield b"\n".join(data)
                data, held = [], 0
            elif line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
                held += len(line)
    last = bytes(buffer).rstrip(b"\r")
    if last.startswith(b"data:"):
        data.append(last[5:].removeprefix(b" "))
    if data:
        yield b"\n".join(data)
