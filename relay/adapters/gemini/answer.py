"""Gemini's generateContent answer as an OpenAI chat completion, its usageMetadata as the
gateway's usage, and its errors (google.rpc.Status) in OpenAI's error shape."""

import json
import secrets
import time
from typing import Any

from relay.adapters.base import error_body
from relay.adapters.gemini.untrusted import count_of, json_of, list_of, object_of
from relay.metering import Payload, json_object

UNREADABLE = "The upstream provider sent an answer that could not be read."
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(
        ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"),
        "content_filter",
    ),
}
# Gemini answers a wrong key with 400 INVALID_ARGUMENT; the gateway disables a channel on 401.
KEY_REFUSED = frozenset({"API_KEY_INVALID"})
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def usage_of(native: object) -> dict[str, Any]:
    """Gemini's usageMetadata in the gateway's OpenAI usage shape. promptTokenCount already
    counts the cached tokens, candidatesTokenCount leaves out the thoughts. Gemini bills no
    cache writes per token (context caching is billed by the hour), so they are 0."""
    meta = object_of(native)
    prompt = count_of(meta.get("promptTokenCount")) + count_of(meta.get("toolUsePromptTokenCount"))
    thoughts = count_of(meta.get("thoughtsTokenCount"))
    completion = count_of(meta.get("candidatesTokenCount")) + thoughts
    inputs = [
        *list_of(meta.get("promptTokensDetails")),
        *list_of(meta.get("toolUsePromptTokensDetails")),
    ]
    outputs = list_of(meta.get("candidatesTokensDetails"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": min(count_of(meta.get("cachedContentTokenCount")), prompt),
            "cache_write_tokens": 0,
            "cache_write_1h_tokens": 0,
            "audio_tokens": min(_modality(inputs, "AUDIO"), prompt),
            "image_tokens": min(_modality(inputs, "IMAGE"), prompt),
        },
        "completion_tokens_details": {
            "reasoning_tokens": min(thoughts, completion),
            "audio_tokens": min(_modality(outputs, "AUDIO"), completion),
        },
    }


def _modality(details: list[Any], modality: str) -> int:
    return sum(
        count_of(object_of(d).get("tokenCount"))
        for d in details
        if object_of(d).get("modality") == modality
    )


def is_answer(native: dict[str, Any]) -> bool:
    """Whether a 200's JSON is a generateContent response (candidates, or a blocked prompt)."""
    return isinstance(native.get("candidates"), list) or isinstance(
        native.get("promptFeedback"), dict
    )


def answer_of(native: dict[str, Any], payload: Payload) -> dict[str, Any]:
    """A generateContent response as an OpenAI chat completion."""
    choices = []
    for position, candidate in enumerate(list_of(native.get("candidates"))):
        if isinstance(candidate, dict):
            message, called = _message(candidate)
            finish = finish_reason_of(candidate.get("finishReason"), called)
            index = choice_index(candidate, position)
            choices.append({"index": index, "message": message, "finish_reason": finish})
    if not choices:  # a blocked prompt gets no candidates
        message = {"role": "assistant", "content": None}
        finish = blocked_finish(native) or "stop"
        choices = [{"index": 0, "message": message, "finish_reason": finish}]
    answer = {
        "id": answer_id(native),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_of(native, payload),
        "choices": choices,
    }
    # No usageMetadata: no usage, so that the gateway estimates rather than bills nothing.
    if isinstance(native.get("usageMetadata"), dict):
        answer["usage"] = usage_of(native["usageMetadata"])
    return answer


def _message(candidate: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A candidate's message, and whether it called a function."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in list_of(object_of(candidate.get("content")).get("parts")):
        part = object_of(part)
        if isinstance(part.get("functionCall"), dict):
            calls.append(tool_call_of(part))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") is True else texts).append(part["text"])
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message, bool(calls)


def tool_call_of(part: dict[str, Any]) -> dict[str, Any]:
    """A functionCall part as an OpenAI tool call with an id of ours (Gemini's are optional)."""
    function = object_of(part.get("functionCall"))
    call: dict[str, Any] = {
        "id": f"call_{secrets.token_hex(12)}",
        "type": "function",
        "function": {
            "name": str(function.get("name") or ""),
            "arguments": json.dumps(object_of(function.get("args")), ensure_ascii=False),
        },
    }
    if isinstance(part.get("thoughtSignature"), str):
        call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return call


def finish_reason_of(reason: object, called: bool) -> str:
    finish = FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"
    return "tool_calls" if called and (reason is None or reason == "STOP") else finish


def blocked_finish(native: dict[str, Any]) -> str | None:
    return "content_filter" if object_of(native.get("promptFeedback")).get("blockReason") else None


def choice_index(candidate: dict[str, Any], position: int) -> int:
    index = candidate.get("index")
    return (
        index if isinstance(index, int) and not isinstance(index, bool) and index >= 0 else position
    )


def answer_id(native: dict[str, Any]) -> str:
    response_id = native.get("responseId")
    return f"chatcmpl-{response_id if isinstance(response_id, str) else secrets.token_hex(12)}"


def model_of(native: dict[str, Any], payload: Payload) -> str:
    version = native.get("modelVersion")
    return version if isinstance(version, str) and version else str(payload.get("model", ""))


def error_of(status: int, content: bytes) -> tuple[int, bytes]:
    """Gemini's error (a google.rpc.Status under "error") in OpenAI's shape, the vendor's
    message kept: (status, body). A refused key becomes a 401, whatever status Gemini gave."""
    parsed = json_object(content)
    if parsed is None:  # the streaming endpoint wraps it in a list
        listed = list_of(json_of(content))
        parsed = object_of(listed[0]) if listed else None
    error = object_of((parsed or {}).get("error"))
    reasons = [object_of(detail).get("reason") for detail in list_of(error.get("details"))]
    if any(reason in KEY_REFUSED for reason in reasons if isinstance(reason, str)):
        status = 401
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = f"The upstream provider answered HTTP {status}."
    code = error.get("status") if isinstance(error.get("status"), str) else None
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return status, error_body(message, kind, code)
