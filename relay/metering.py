"""Token counts when an upstream gives none, and the estimate money is held for.

The estimate errs on the high side (about three ASCII characters a token, every other character
a token of its own, a fixed allowance per image or file; tool definitions and earlier tool calls
count as text), so that the hold covers the real cost; what is charged is the real usage
whenever the upstream reports it. Estimated usage is marked as such in the log.
"""

import json
from typing import Any, NamedTuple, TypeIs

from django.conf import settings

from billing.pricing import (
    CostBreakdown,
    call_cost,
    call_cost_ceiling,
    token_cost,
    token_cost_ceiling,
)
from relay.config import Line, Price

# A request body as parsed JSON: what the gateway reads of it is checked by relay.parsing.
Payload = dict[str, Any]


class Usage(NamedTuple):
    """What a request is charged for: its tokens, and whether we estimated them."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool


NO_USAGE = Usage(0, 0, False)

CHARS_PER_TOKEN = 3
IMAGE_TOKENS = 1_500
MESSAGE_OVERHEAD = 4


def _text_tokens(text: str) -> int:
    ascii_chars = len(text.encode("ascii", "ignore"))
    return (ascii_chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN + len(text) - ascii_chars


def estimate_prompt_tokens(payload: Payload, path: str) -> int:
    if path == "chat/completions":
        total = 3
        # Tool definitions are part of the prompt: agents send thousands of tokens of them.
        tools = payload.get("tools")
        if isinstance(tools, list) and tools:
            total += _text_tokens(json.dumps(tools))
        for message in payload.get("messages") or []:
            if not isinstance(message, dict):
                continue
            total += MESSAGE_OVERHEAD + _calls_tokens(message.get("tool_calls"))
            content = message.get("content")
            if isinstance(content, str):
                total += _text_tokens(content)
            elif isinstance(content, list):
                for part in content:
                    if not isinstance(part, dict):
                        continue
                    if part.get("type") == "text":
                        total += _text_tokens(str(part.get("text", "")))
                    elif part.get("type") in {"image_url", "input_image", "input_audio", "file"}:
                        total += IMAGE_TOKENS
        return total
    field = {"completions": "prompt", "images/generations": "prompt"}.get(path, "input")
    value = payload.get(field, "")
    if isinstance(value, str):
        return _text_tokens(value)
    if isinstance(value, list):
        if value and all(isinstance(item, int) for item in value):
            return len(value)  # already tokens
        return sum(
            len(item) if isinstance(item, list) else _text_tokens(str(item)) for item in value
        )
    return 0


def _calls_tokens(calls: object) -> int:
    """An assistant's earlier tool calls: their names and arguments are read again."""
    if not isinstance(calls, list):
        return 0
    total = 0
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            total += MESSAGE_OVERHEAD + _text_tokens(
                str(function.get("name", "")) + str(function.get("arguments", ""))
            )
    return total


def completion_allowance(payload: Payload, path: str) -> int:
    """The most completion tokens a request can produce, for holding money: the limit of one
    answer, times the answers asked for (n; and best_of on completions, all of them billed)."""
    if path == "embeddings":
        return 0
    each = settings.GATEWAY_DEFAULT_MAX_TOKENS
    for field in ("max_completion_tokens", "max_tokens"):
        value = payload.get(field)
        if _positive_int(value):
            each = value
            break
    counts = [payload.get("n"), payload.get("best_of") if path == "completions" else None]
    return each * max([c for c in counts if _positive_int(c)], default=1)


def _positive_int(value: object) -> TypeIs[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# Token counts are stored as 32-bit integers; a count beyond that is no real usage.
MAX_REPORTED_TOKENS = 2**31 - 1


def reported_usage(usage: object, *, embeddings: bool = False) -> tuple[int, int] | None:
    """(prompt, completion) from an upstream's `usage`, or None when it is missing or not
    believable (not whole numbers from 0 up): then the gateway estimates, and says so."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0 if embeddings else None)
    if _token_count(prompt) and _token_count(completion):
        return prompt, completion
    return None


def _token_count(value: object) -> TypeIs[int]:
    return (
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_REPORTED_TOKENS
    )


def estimate_completion_tokens(text: str) -> int:
    return _text_tokens(text) if text else 0


def price(price: Price, line: Line, prompt_tokens: int, completion_tokens: int) -> CostBreakdown:
    """The cost breakdown of a request on a line, from the gateway's price snapshot."""
    if price.per_call:
        return call_cost(
            call_price=price.call_price,
            line_multiplier=line.multiplier,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
    return token_cost(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        model_multiplier=price.model_multiplier,
        completion_multiplier=price.completion_multiplier,
        line_multiplier=line.multiplier,
    )


def hold_amount(price_: Price, line: Line, prompt_tokens: int, completion_tokens: int) -> int:
    """Micro-dollars to hold for a request: its estimated cost, rounded up."""
    if price_.per_call:
        return call_cost_ceiling(price_.call_price, line.multiplier)
    return token_cost_ceiling(
        prompt_tokens,
        completion_tokens,
        price_.model_multiplier,
        price_.completion_multiplier,
        line.multiplier,
    )


def answer_usage(content: bytes, payload: Payload, path: str) -> Usage:
    """The usage of a whole answer: as the upstream reports it, else estimated."""
    counts = reported_usage(_usage_field(content), embeddings=path == "embeddings")
    if counts is not None:
        return Usage(*counts, False)
    prompt_tokens = estimate_prompt_tokens(payload, path)
    return Usage(prompt_tokens, estimate_completion_tokens(_answer_text(content)), True)


def stream_usage(usage: object, content_chunks: int, payload: Payload, path: str) -> Usage:
    """The usage of a streamed answer: from its usage chunk, else estimated (a content chunk
    is about a token)."""
    counts = reported_usage(usage)
    if counts is not None:
        return Usage(*counts, False)
    return Usage(estimate_prompt_tokens(payload, path), content_chunks, True)


def json_object(data: bytes | str) -> dict[str, Any] | None:
    """`data` as a JSON object, or None when it is not one (nor JSON, or nested past what the
    parser can follow): what a channel sends is read with this, never trusted to parse."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _usage_field(content: bytes) -> object:
    return (json_object(content) or {}).get("usage")


def _answer_text(content: bytes) -> str:
    answer = json_object(content) or {}
    texts = []
    for choice in answer.get("choices") or []:
        if isinstance(choice, dict):
            message = choice.get("message") or {}
            texts.append(str(message.get("content") or choice.get("text") or ""))
    return "".join(texts)
