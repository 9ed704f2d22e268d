"""A chat answer as a Response object, and a chat stream as the Responses events."""

import json
from typing import Any, TypeIs
from uuid import UUID

from relay.metering import Payload, Usage, json_object

BROKEN_OFF = "The upstream stream broke off. Retry the request."


def response(
    request: Payload, answer: Payload | None, *, call_id: UUID, created_at: int, usage: Usage
) -> bytes:
    """The Response object for a whole chat answer (None: not JSON), billed at `usage`."""
    choices = (answer or {}).get("choices")
    choice = _object(choices[0] if isinstance(choices, list) and choices else None)
    message = _object(choice.get("message"))
    status, incomplete = _status(choice.get("finish_reason"))
    item_status = "completed" if status == "completed" else "incomplete"
    key, output = call_id.hex, []
    parts = []
    if isinstance(message.get("content"), str) and message["content"]:
        parts.append(_output_text(message["content"]))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append(_message_item(f"msg_{key}_0", item_status, parts))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            item = _call_item(f"fc_{key}_{len(output)}", call.get("id"), function)
            output.append({**item, "status": "completed"})
    return json.dumps(
        response_object(
            request,
            key=key,
            created_at=created_at,
            status=status,
            output=output,
            usage=_usage(usage),
            incomplete=incomplete,
        )
    ).encode()


def response_object(
    request: Payload,
    *,
    key: str,
    created_at: int,
    status: str,
    output: list[Payload],
    usage: Payload | None = None,
    error: Payload | None = None,
    incomplete: Payload | None = None,
) -> Payload:
    """A Response object: the answer, and the request's settings as the model ran with them."""
    text, reasoning = _object(request.get("text")), _object(request.get("reasoning"))
    parallel = request.get("parallel_tool_calls")
    return {
        "id": f"resp_{key}",
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": request["model"],
        "output": output,
        "parallel_tool_calls": True if parallel is None else parallel,
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": None},
        "store": False,
        "temperature": request.get("temperature"),
        "text": {**text, "format": text.get("format") or {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation") or "disabled",
        "usage": usage,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _status(finish_reason: object) -> tuple[str, Payload | None]:
    """A Response's status, and why it is incomplete, from a chat answer's finish reason."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _usage(usage: Usage) -> Payload:
    """The billed usage, with its cached and reasoning parts."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_5m_tokens + usage.cache_write_1h_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _output_text(text: str) -> Payload:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, status: str, content: list[Payload]) -> Payload:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _call_item(item_id: str, call_id: object, function: Payload) -> Payload:
    name, arguments = function.get("name"), function.get("arguments")
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id if isinstance(call_id, str) and call_id else f"call_{item_id}",
        "name": name if isinstance(name, str) else "",
        "arguments": arguments if isinstance(arguments, str) else "",
        "status": "in_progress",
    }


class ResponseStream:
    """The Responses events of one streamed answer, made from its chat chunks as they come.

    `opening()` first; then `feed()` for each line of the chat stream (or `chunk()` for each
    chat chunk); then `finished()` once the channel has ended the answer, or `failed()` if it
    broke off. Each returns server-sent events ready to send. Items are closed as the next
    begins (the text before the function calls) or at the end. `usage` (the channel's) and
    `chunks` (of text or arguments, about a token each) are read for billing."""

    def __init__(self, request: Payload, *, call_id: UUID, created_at: int) -> None:
        self.request = request
        self.key = call_id.hex
        self.created_at = created_at
        self.sequence = 0
        self.output: list[Payload] = []  # the items so far; output_index is the position
        self.message: Payload | None = None  # the message item being written
        self.calls: dict[object, Payload] = {}  # function call items by chat tool call index
        self.finish_reason: str | None = None
        self.usage: object = None  # the channel's usage chunk
        self.chunks = 0  # chunks of text or arguments: about a token each

    def opening(self) -> bytes:
        response = self._response("in_progress")
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def feed(self, line: bytes) -> bytes:
        """The events for one line of the chat stream (b"" for none)."""
        if not line.startswith(b"data:"):
            return b""
        chunk = json_object(line[5:])  # data: [DONE] too is no object
        return self.chunk(chunk) if chunk is not None else b""

    def chunk(self, chunk: Payload) -> bytes:
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            return b""
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return b""
        events = []
        if isinstance(delta.get("content"), str) and delta["content"]:
            events += self._text(delta["content"])
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict):
                events += self._call(call)
        return b"".join(events)

    def finished(self, usage: Usage) -> bytes:
        """The last events: the items closed, then response.completed or .incomplete."""
        status, incomplete = _status(self.finish_reason)
        events = self._close("completed" if status == "completed" else "incomplete")
        response = self._response(status, usage=_usage(usage), incomplete=incomplete)
        return b"".join(events) + self._event(f"response.{status}", response=response)

    def failed(self, usage: Usage) -> bytes:
        """The last events of an answer the channel broke off: response.failed."""
        events = self._close("incomplete")
        error = {"code": "server_error", "message": BROKEN_OFF}
        response = self._response("failed", usage=_usage(usage), error=error)
        return b"".join(events) + self._event("response.failed", response=response)

    def _text(self, delta: str) -> list[bytes]:
        self.chunks += 1
        events = []
        if self.message is None:
            index = len(self.output)
            self.message = _message_item(f"msg_{self.key}_{index}", "in_progress", [])
            self.output.append(self.message)
            events.append(self._item_event("added", index, self.message))
            part = _output_text("")
            self.message["content"].append(part)
            events.append(self._part_event("added", index, part))
        message = self.message
        index = self._index(message)
        message["content"][0]["text"] += delta
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=message["id"],
                output_index=index,
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        )
        return events

    def _call(self, delta: Payload) -> list[bytes]:
        function = _object(delta.get("function"))
        index = delta.get("index") if _whole(delta.get("index")) else 0
        events = []
        item = self.calls.get(index)
        if item is None:
            events += self._close_message("completed")
            # Its arguments come as deltas below, this chunk's too (some channels send a whole
            # call in its first chunk).
            opening = {**function, "arguments": ""}
            item = _call_item(f"fc_{self.key}_{len(self.output)}", delta.get("id"), opening)
            self.calls[index] = item
            self.output.append(item)
            events.append(self._item_event("added", len(self.output) - 1, item))
        elif not item["name"] and isinstance(function.get("name"), str):
            item["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments and item["status"] == "in_progress":
            self.chunks += 1
            item["arguments"] += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self._index(item),
                    delta=arguments,
                )
            )
        return events

    def _close(self, status: str) -> list[bytes]:
        events = self._close_message(status)
        for item in self.calls.values():
            if item["status"] == "in_progress":
                item["status"] = status
                index = self._index(item)
                events.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        arguments=item["arguments"],
                    )
                )
                events.append(self._item_event("done", index, item))
        return events

    def _close_message(self, status: str) -> list[bytes]:
        message, self.message = self.message, None
        if message is None:
            return []
        message["status"] = status
        index, part = self._index(message), message["content"][0]
        text_done = self._event(
            "response.output_text.done",
            item_id=message["id"],
            output_index=index,
            content_index=0,
            text=part["text"],
            logprobs=[],
        )
        return [
            text_done,
            self._part_event("done", index, part),
            self._item_event("done", index, message),
        ]

    def _index(self, item: Payload) -> int:
        return next(i for i, each in enumerate(self.output) if each is item)

    def _item_event(self, stage: str, index: int, item: Payload) -> bytes:
        return self._event(f"response.output_item.{stage}", output_index=index, item=item)

    def _part_event(self, stage: str, index: int, part: Payload) -> bytes:
        item_id = self.output[index]["id"]
        return self._event(
            f"response.content_part.{stage}",
            item_id=item_id,
            output_index=index,
            content_index=0,
            part=part,
        )

    def _response(self, status: str, **fields: Any) -> Payload:
        return response_object(
            self.request,
            key=self.key,
            created_at=self.created_at,
            status=status,
            output=self.output,
            **fields,
        )

    def _event(self, kind: str, **fields: Any) -> bytes:
        """One server-sent event, made now: later changes to the items do not touch it."""
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: %s\ndata: %s\n\n" % (kind.encode(), json.dumps(data).encode())


def _whole(value: object) -> TypeIs[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _object(value: object) -> Payload:
    return value if isinstance(value, dict) else {}
