"""Anthropic's whole answer, a Message, as a chat completion; its usage in OpenAI's shape with
our cache fields; its errors as OpenAI's."""

import json
import re
import time
from typing import Any

from relay.adapters.base import error_body
from relay.metering import MAX_REPORTED_TOKENS, Payload, json_object

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic's error types as OpenAI's; the Anthropic type itself is the error's code.
ERROR_TYPES = {
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "rate_limit_error": "rate_limit_error",
}
# What Anthropic calls an error of a status, when its body does not say.
ERROR_CODES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_TYPE = re.compile(r"[a-z_]{1,40}")


def chat_completion(message: Payload) -> Payload:
    """A whole Message as a chat completion."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Payload] = []
    for block in message["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thoughts.append(block["thinking"])
        elif kind == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id") or ""),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name") or ""),
                        "arguments": arguments_of(block.get("input")),
                    },
                }
            )
    reply: Payload = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if thoughts:
        reply["reasoning_content"] = "".join(thoughts)
    if calls:
        reply["tool_calls"] = calls
    completion: Payload = {
        "id": f"chatcmpl-{message.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(message.get("model", "")),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": finish_reason_of(message.get("stop_reason")),
                "logprobs": None,
            }
        ],
    }
    if counted(message.get("usage")):
        # Without any, the gateway estimates the usage (and says so) rather than bill nothing.
        completion["usage"] = usage_of(message["usage"])
    return completion


def finish_reason_of(stop_reason: object) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def arguments_of(tool_input: object) -> str:
    return json.dumps(tool_input if isinstance(tool_input, dict) else {}, ensure_ascii=False)


def counted(native_usage: object) -> bool:
    """Whether Anthropic's usage holds its counts: without them the gateway estimates."""
    return isinstance(native_usage, dict) and all(
        isinstance(native_usage.get(key), int) for key in ("input_tokens", "output_tokens")
    )


def usage_of(native_usage: object) -> dict[str, Any]:
    """Anthropic's usage as OpenAI's, with our cache fields. Its input_tokens leave out the
    cache reads and writes, which OpenAI's prompt_tokens include."""
    usage = native_usage if isinstance(native_usage, dict) else {}
    uncached = _count(usage.get("input_tokens"))
    read = _count(usage.get("cache_read_input_tokens"))
    writes = _count(usage.get("cache_creation_input_tokens"))
    writes_1h = 0
    split = usage.get("cache_creation")
    if isinstance(split, dict):
        writes_5m = _count(split.get("ephemeral_5m_input_tokens"))
        writes_1h = _count(split.get("ephemeral_1h_input_tokens"))
        # The two agree in Anthropic's answers; should they not, the larger is billed.
        writes = max(writes, writes_5m + writes_1h)
    prompt = uncached + read + writes
    completion = _count(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": read,
            "cache_write_tokens": writes,
            "cache_write_1h_tokens": writes_1h,
            # Images count in input_tokens; Anthropic does not say how many, nor has audio.
            "audio_tokens": 0,
            "image_tokens": 0,
        },
        # Thinking is counted in output_tokens and not reported apart: none can be told.
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _count(value: object) -> int:
    """A token count as reported, or 0 when it is none (missing, negative, not whole)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, MAX_REPORTED_TOKENS)
    return 0


def error_of(status: int, native: bytes) -> bytes:
    """Anthropic's error answer, {"type": "error", "error": {"type", "message"}}, in OpenAI's
    shape: its message kept, its type as the code."""
    found = json_object(native) or {}
    error: Payload = found["error"] if isinstance(found.get("error"), dict) else {}
    code = error.get("type")
    if not isinstance(code, str) or not ERROR_TYPE.fullmatch(code):
        code = ERROR_CODES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = f"The upstream provider answered HTTP {status}."
    kind = ERROR_TYPES.get(code, "server_error" if status >= 500 else "invalid_request_error")
    return error_body(message[:2000], kind, code)
