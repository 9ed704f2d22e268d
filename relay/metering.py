"""Token counts when an upstream gives none, and the estimate money is held for.

The estimate errs on the high side (about three ASCII characters a token, every other character
a token of its own, a fixed allowance per image or file; tool definitions and earlier tool calls
count as text), so that the hold covers the real cost; what is charged is the real usage
whenever the upstream reports it. Estimated usage is marked as such in the log.
"""

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeIs

from django.conf import settings

from billing.pricing import (
    CostBreakdown,
    Tokens,
    call_cost,
    call_cost_ceiling,
    token_cost,
    token_cost_ceiling,
)
from relay.config import Line, Price

# A request body as parsed JSON: what the gateway reads of it is checked by relay.parsing.
Payload = dict[str, Any]


class Usage(NamedTuple):
    """What a request is charged for: its tokens, and whether we estimated them.

    prompt_tokens and completion_tokens are totals, whatever the channel's convention: cache
    reads and writes, audio and image input are parts of prompt_tokens; reasoning and audio
    output parts of completion_tokens. No part is negative or more than its total."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    reasoning_tokens: int = 0
    image_tokens: int = 0  # priced as text input: shown, not priced apart

    @property
    def parts(self) -> Tokens:
        return Tokens.of(self)


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


LIMITED_PATHS = frozenset({"chat/completions", "completions"})


class Allowance(NamedTuple):
    """The completion tokens to hold money for: `each` answer's limit, times the `answers`
    billed; `explicit`: the request set the limit (else it is GATEWAY_DEFAULT_MAX_TOKENS, and
    the gateway may lower it to what the funds cover, and send it upstream)."""

    each: int
    answers: int
    explicit: bool

    @property
    def tokens(self) -> int:
        return self.each * self.answers


def output_allowance(payload: Payload, path: str) -> Allowance:
    """The most completion tokens a request can produce, for holding money: the limit of one
    answer, times the answers asked for (n; and best_of on completions, all of them billed)."""
    if path == "embeddings":
        return Allowance(0, 1, True)
    # Only text answers can be given a limit of ours (an image request has none to set).
    each, explicit = settings.GATEWAY_DEFAULT_MAX_TOKENS, path not in LIMITED_PATHS
    for field in ("max_completion_tokens", "max_tokens"):
        value = payload.get(field)
        if _positive_int(value):
            each, explicit = value, True
            break
    counts = [payload.get("n"), payload.get("best_of") if path == "completions" else None]
    return Allowance(each, max([c for c in counts if _positive_int(c)], default=1), explicit)


def completion_allowance(payload: Payload, path: str) -> int:
    return output_allowance(payload, path).tokens


# The shortest answer a request without max_tokens is fitted down to when funds are short.
LEAST_FITTED_TOKENS = 16


@dataclass(frozen=True, slots=True)
class HoldAsk:
    """The money a request asks to have held: `amount` for its prompt and its allowance;
    `least`, down to which a request without max_tokens is fitted to what the funds cover.
    Both are worked out once, as the ask is made: every request asks."""

    price: Price
    line: Line
    prompt_tokens: int
    allowance: Allowance
    amount: int = dataclasses.field(init=False)
    least: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        amount = hold_amount(self.price, self.line, self.prompt_tokens, self.allowance.tokens)
        least = amount
        if self.fits:
            each = min(LEAST_FITTED_TOKENS, self.allowance.each)
            tokens = each * self.allowance.answers
            least = hold_amount(self.price, self.line, self.prompt_tokens, tokens)
        object.__setattr__(self, "amount", amount)
        object.__setattr__(self, "least", least)

    @property
    def fits(self) -> bool:
        """Whether the answers' limit may be lowered to what the funds cover."""
        return not (self.allowance.explicit or self.price.per_call)

    def each_covered(self, held: int) -> int:
        """The most tokens each answer may have for `held` to cover the request (0: not even
        its prompt), at most the allowance's."""
        if self.price.per_call:
            return self.allowance.each if held >= self.amount else 0
        low, high = 0, self.allowance.each
        if hold_amount(self.price, self.line, self.prompt_tokens, 0) > held:
            return 0
        while low < high:  # the cost grows with the tokens: the last count `held` covers
            middle = (low + high + 1) // 2
            tokens = middle * self.allowance.answers
            if hold_amount(self.price, self.line, self.prompt_tokens, tokens) <= held:
                low = middle
            else:
                high = middle - 1
        return low


def with_output_limit(payload: Payload, path: str, each: int) -> Payload:
    """The request with its answers limited to `each` tokens, as the channel reads it: what the
    gateway held money for, when the request set no limit of its own."""
    field = "max_tokens" if path == "completions" else "max_completion_tokens"
    return {**payload, field: each}


def _positive_int(value: object) -> TypeIs[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# Token counts are stored as 32-bit integers; a count beyond that is no real usage.
MAX_REPORTED_TOKENS = 2**31 - 1


TOTALS = {"prompt_tokens", "completion_tokens", "total_tokens"}


def reported_usage(usage: object, *, embeddings: bool = False) -> Usage | None:
    """The usage an upstream reports in OpenAI's shape, or None when it is missing or not
    believable (totals not whole numbers from 0 up): then the gateway estimates, and says so.

    The parts are read as OpenAI (prompt_tokens_details, completion_tokens_details), DeepSeek
    (prompt_cache_hit_tokens) and proxies passing Anthropic's names on (cache_read_input_tokens,
    cache_creation_input_tokens) report them; prompt_tokens includes them in every one. The
    gateway's own adapters (relay.adapters) report in this shape too, with cache_write_tokens
    and cache_write_1h_tokens in prompt_tokens_details. A part that is not a count is 0, and
    parts are cut to what their total leaves."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0 if embeddings else None)
    if not (_token_count(prompt) and _token_count(completion)):
        return None
    if usage.keys() <= TOTALS:  # no parts: the common case
        return Usage(prompt, completion, False)
    prompt_details = _details(usage.get("prompt_tokens_details"))
    completion_details = _details(usage.get("completion_tokens_details"))
    left = prompt
    read = _part(
        prompt_details.get("cached_tokens")
        or usage.get("prompt_cache_hit_tokens")
        or usage.get("cache_read_input_tokens"),
        left,
    )
    left -= read
    writes = _part(
        prompt_details.get("cache_write_tokens") or usage.get("cache_creation_input_tokens"), left
    )
    left -= writes
    write_1h = _part(prompt_details.get("cache_write_1h_tokens"), writes)
    audio_input = _part(prompt_details.get("audio_tokens"), left)
    reasoning = _part(completion_details.get("reasoning_tokens"), completion)
    return Usage(
        prompt,
        completion,
        False,
        cache_read_tokens=read,
        cache_write_5m_tokens=writes - write_1h,
        cache_write_1h_tokens=write_1h,
        audio_input_tokens=audio_input,
        audio_output_tokens=_part(completion_details.get("audio_tokens"), completion - reasoning),
        reasoning_tokens=reasoning,
        image_tokens=_part(prompt_details.get("image_tokens"), prompt),
    )


def _details(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _part(value: object, most: int) -> int:
    """A part of a total: a count, at most `most`; anything else is 0."""
    return min(value, most) if _token_count(value) else 0


def _token_count(value: object) -> TypeIs[int]:
    return (
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_REPORTED_TOKENS
    )


def estimate_completion_tokens(text: str) -> int:
    return _text_tokens(text) if text else 0


def price(price: Price, line: Line, usage: Usage) -> CostBreakdown:
    """The cost breakdown of a request on a line, from the gateway's price snapshot."""
    if price.per_call:
        return call_cost(
            call_price=price.call_price,
            line_multiplier=line.multiplier,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
    return token_cost(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        model_multiplier=price.model_multiplier,
        completion_multiplier=price.completion_multiplier,
        line_multiplier=line.multiplier,
        parts=usage.parts,
        rates=price.rates,
    )


def hold_amount(price_: Price, line: Line, prompt_tokens: int, completion_tokens: int) -> int:
    """Micro-dollars to hold for a request: the most its estimate can cost, rounded up."""
    if price_.per_call:
        return call_cost_ceiling(price_.call_price, line.multiplier)
    return token_cost_ceiling(
        prompt_tokens,
        completion_tokens,
        price_.model_multiplier,
        line.multiplier,
        price_.rates,
    )


def answer_usage(answer: Payload | None, payload: Payload, path: str) -> Usage:
    """The usage of a whole answer (parsed; None when it is not JSON): as the upstream reports
    it, else estimated."""
    answer = answer or {}
    reported = reported_usage(answer.get("usage"), embeddings=path == "embeddings")
    if reported is not None:
        return reported
    prompt_tokens = estimate_prompt_tokens(payload, path)
    return Usage(prompt_tokens, estimate_completion_tokens(_answer_text(answer)), True)


def stream_usage(usage: object, content_chunks: int, payload: Payload, path: str) -> Usage:
    """The usage of a streamed answer: from its usage chunk, else estimated (a content chunk
    is about a token)."""
    reported = reported_usage(usage)
    if reported is not None:
        return reported
    return Usage(estimate_prompt_tokens(payload, path), content_chunks, True)


def json_object(data: bytes | str) -> dict[str, Any] | None:
    """`data` as a JSON object, or None when it is not one (nor JSON, or nested past what the
    parser can follow): what a channel sends is read with this, never trusted to parse."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _answer_text(answer: Payload) -> str:
    texts = []
    for choice in answer.get("choices") or []:
        if isinstance(choice, dict):
            message = choice.get("message") or {}
            texts.append(str(message.get("content") or choice.get("text") or ""))
    return "".join(texts)


def with_cost(answer: Payload, content: bytes, charged: int) -> bytes:
    """An answer (parsed, and as it came) with what it cost in its usage, in dollars, as
    OpenRouter reports it (`cost`): an extra field that OpenAI's clients keep and strict ones
    ignore. Where the usage ends the answer, the cost is written into the answer as it came;
    elsewhere the answer is written anew, and one that JSON cannot write back as it came (a
    number past a float) goes on unchanged."""
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        return content
    cost = json.dumps(charged / 1_000_000).encode()
    if "cost" not in usage and next(reversed(answer)) == "usage":
        # The usage object closes the answer, as upstreams write it: the cost goes in before
        # its closing brace, with no need to write the whole answer again. (An answer in
        # UTF-16 or -32 never ends in two braces with only spaces between: it is written anew.)
        head = content.rstrip()
        if head[-1:] == b"}":
            head = head[:-1].rstrip()
            if head[-1:] == b"}":
                opened = head[:-1].rstrip()
                comma = b"" if opened[-1:] == b"{" else b", "
                return b'%s%s"cost": %s}}' % (opened, comma, cost)
    try:
        return json.dumps(
            {**answer, "usage": {**usage, "cost": charged / 1_000_000}},
            ensure_ascii=False,
            allow_nan=False,
        ).encode()
    except ValueError:
        return content
