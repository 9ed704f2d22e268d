"""Anthropic's stream: its server-sent events read from the lines as they come, and made into
chat completion chunks."""

import json
import time
from collections.abc import Iterator

from relay.adapters.anthropic.answer import (
    ERROR_TYPE,
    arguments_of,
    counted,
    finish_reason_of,
    usage_of,
)
from relay.adapters.base import UpstreamError
from relay.metering import Payload, json_object

# A stream event larger than this is no event of Anthropic's.
MAX_EVENT = 16 * 1024 * 1024


class EventReader:
    """Server-sent events from the lines of a stream, whole or cut anywhere: each event's
    data as a JSON object, its `type` from the event name when the data has none."""

    def __init__(self) -> None:
        self.pending = b""
        self.name = ""
        self.data: list[bytes] = []

    def feed(self, piece: bytes) -> Iterator[Payload]:
        self.pending += piece
        *lines, self.pending = self.pending.split(b"\n")
        if len(self.pending) > MAX_EVENT:
            raise UpstreamError("stream broke off: a line too long to read")
        for line in lines:
            yield from self._line(line.rstrip(b"\r"))

    def end(self) -> Iterator[Payload]:
        """What the stream left without a closing blank line."""
        if self.pending:
            yield from self._line(self.pending.rstrip(b"\r"))
            self.pending = b""
        yield from self._line(b"")

    def _line(self, line: bytes) -> Iterator[Payload]:
        if not line:
            if self.data:
                yield self._event()
            self.name, self.data = "", []
            return
        field, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if field == b"event":
            self.name = value.decode("utf-8", "replace")
        elif field == b"data":
            self.data.append(value)
            if sum(map(len, self.data)) > MAX_EVENT:
                raise UpstreamError("stream broke off: an event too long to read")

    def _event(self) -> Payload:
        event = json_object(b"\n".join(self.data))
        if event is None:
            raise UpstreamError("stream broke off: an event that could not be read")
        if not isinstance(event.get("type"), str):
            event["type"] = self.name
        return event


class ChatChunks:
    """Anthropic's stream events as chat completion chunks: a first chunk with the role, the
    text, thinking and tool call deltas, then at message_stop the finish reason, the usage
    (input and cache counts from message_start, the last message_delta's where it repeats
    them) and `data: [DONE]`."""

    def __init__(self) -> None:
        self.started = False
        self.ended = False
        self.id = ""
        self.model = ""
        self.created = int(time.time())
        self.usage: Payload | None = None
        self.stop_reason: object = None
        self.tools: dict[object, int] = {}  # content block index → tool call index

    def feed(self, event: Payload) -> list[bytes]:
        kind = event["type"]
        if kind == "error":
            error = event.get("error")
            code = error.get("type") if isinstance(error, dict) else None
            # Its type only: an error's text is not ours to log.
            code = code if isinstance(code, str) and ERROR_TYPE.fullmatch(code) else "error"
            raise UpstreamError(f"stream broke off: {code} event")
        if self.ended or kind == "ping":
            return []
        if kind == "message_start":
            return self._start(event.get("message"))
        if not self.started:
            return []  # and the stream ends before message_stop
        if kind == "content_block_start":
            return self._block_start(event.get("index"), event.get("content_block"))
        if kind == "content_block_delta":
            return self._delta(event.get("index"), event.get("delta"))
        if kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.stop_reason = delta["stop_reason"]
            self._count(event.get("usage"))
            return []
        if kind == "message_stop":
            return self._stop()
        return []  # content_block_stop, and event types Anthropic may add

    def _start(self, message: object) -> list[bytes]:
        if self.started or not isinstance(message, dict):
            raise UpstreamError("stream broke off: a message_start that could not be read")
        self.started = True
        self.id = f"chatcmpl-{message.get('id', '')}"
        self.model = str(message.get("model", ""))
        self._count(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _count(self, usage: object) -> None:
        if isinstance(usage, dict):
            known = {key: value for key, value in usage.items() if value is not None}
            self.usage = {**(self.usage or {}), **known}

    def _block_start(self, index: object, block: object) -> list[bytes]:
        if not isinstance(block, dict):
            return []
        if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
            return [self._chunk({"content": block["text"]})]
        if block.get("type") == "thinking" and isinstance(block.get("thinking"), str):
            return (
                [self._chunk({"reasoning_content": block["thinking"]})] if block["thinking"] else []
            )
        if block.get("type") != "tool_use":
            return []
        self.tools[index] = len(self.tools)
        tool_input = block.get("input")
        call = {
            "index": self.tools[index],
            "id": str(block.get("id") or ""),
            "type": "function",
            # Anthropic starts a call with empty input, then streams it as JSON.
            "function": {
                "name": str(block.get("name") or ""),
                "arguments": arguments_of(tool_input) if tool_input else "",
            },
        }
        return [self._chunk({"tool_calls": [call]})]

    def _delta(self, index: object, delta: object) -> list[bytes]:
        if not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
            return [self._chunk({"content": delta["text"]})]
        if kind == "thinking_delta" and isinstance(delta.get("thinking"), str):
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        if kind == "input_json_delta" and index in self.tools:
            piece = delta.get("partial_json")
            if isinstance(piece, str) and piece:
                call = {"index": self.tools[index], "function": {"arguments": piece}}
                return [self._chunk({"tool_calls": [call]})]
        return []  # signature_delta, citations_delta

    def _stop(self) -> list[bytes]:
        self.ended = True
        chunks = [self._chunk({}, finish_reason_of(self.stop_reason))]
        if counted(self.usage):
            # Without any, the gateway estimates the usage (and says so) rather than bill nothing.
            chunks.append(
                self._data({**self._head(), "choices": [], "usage": usage_of(self.usage)})
            )
        return [*chunks, b"data: [DONE]\n\n"]

    def _head(self) -> Payload:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }

    def _chunk(self, delta: Payload, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return self._data({**self._head(), "choices": [choice]})

    @staticmethod
    def _data(chunk: Payload) -> bytes:
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
