"""POST /v1/chat/completions, /v1/completions and /v1/embeddings: OpenAI requests, passed to an
OpenAI-compatible channel as they are (with the channel's model name), and its answers passed
back as they are, whole or streamed as server-sent events.

Money is held for the most the request can cost before it is forwarded; what is charged is the
usage the channel reports, or our estimate when it reports none (marked as such in the log).
"""

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay import adapters, errors, http, metering, parsing, routing
from relay.adapters import Reply
from relay.calls import Call, Outcome
from relay.config import RelayConfig
from relay.metering import Payload, Usage
from relay.routing import Forwarded
from tokens.cache import TokenSnapshot

if TYPE_CHECKING:
    from relay.gateway import Gateway


log = logging.getLogger(__name__)

# The one path that serves the models priced per image; no other path serves them.
IMAGES = "images/generations"


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str  # at the channel, after its base URL
    parse: Callable[[bytes], Payload]
    streams: bool  # whether `"stream": true` streams the answer


async def serve(gateway: "Gateway", call: Call, *, endpoint: Endpoint) -> Outcome:
    """Authenticates, parses, prices and holds, forwards with failover; the outcome says what
    the answer costs (the gateway charges and records it)."""
    token, config = await gateway.admit(call)
    payload = endpoint.parse(await http.read_body(call.scope, call.receive))
    call.stream = endpoint.streams and payload.get("stream") is True
    forwarded = await forward(gateway, call, token, config, payload, endpoint.path)
    reply = forwarded.reply
    if reply is None:
        return failed(forwarded)
    if call.stream and reply.status == 200:
        return await stream(call, forwarded, reply, payload, endpoint.path)
    # Embeddings' answers are large: their cost is in the header alone.
    tell_cost = endpoint is not EMBEDDINGS
    return passed_on(forwarded, reply.status, payload, endpoint.path, tell_cost=tell_cost)


async def forward(
    gateway: "Gateway",
    call: Call,
    token: TokenSnapshot,
    config: RelayConfig,
    payload: Payload,
    path: str,
) -> Forwarded:
    """Holds the most the request can cost, then sends it to `path` of the channels that serve
    its model, failing over from one to the next. Every protocol's requests go this way: the
    same model and usage cost the same whichever protocol the client speaks."""
    call.model, call.price = payload["model"], config.prices.get(payload["model"])
    plan = routing.plan(config, token, call.model)
    if (plan.price.kind == "image") != (path == IMAGES):
        raise errors.wrong_endpoint(call.model, plan.price.kind)
    call.prompt_estimate = metering.estimate_prompt_tokens(payload, path)
    allowance = metering.output_allowance(payload, path)
    ask = metering.HoldAsk(plan.price, plan.line, call.prompt_estimate, allowance)
    each = await gateway.hold(call, token, plan, ask)
    if each < allowance.each:  # fitted to the funds: the answer cannot cost more than held
        payload = metering.with_output_limit(payload, path, each)
    return await gateway.router.forward(plan.channels, path, payload, stream=call.stream)


async def admit_as_chat(
    gateway: "Gateway", call: Call, to_chat: Callable[[Payload], Payload]
) -> tuple[TokenSnapshot, RelayConfig, Payload, Payload]:
    """A bridged protocol's request, authenticated and made into a chat completion request by
    `to_chat`. Returns (token, config, the request, the chat request)."""
    token, config = await gateway.admit(call)
    request = parsing.bridged(await http.read_body(call.scope, call.receive))
    return token, config, request, to_chat(request)


async def forward_as_chat(
    gateway: "Gateway", call: Call, to_chat: Callable[[Payload], Payload]
) -> tuple[Payload, Payload, Forwarded]:
    """A bridged protocol's request, forwarded as chat is (see `admit_as_chat`). Returns (the
    request, the chat request, forwarded)."""
    token, config, request, chat = await admit_as_chat(gateway, call, to_chat)
    call.stream = chat.get("stream") is True
    forwarded = await forward(gateway, call, token, config, chat, CHAT.path)
    return request, chat, forwarded


def failed(forwarded: Forwarded) -> Outcome:
    """Every channel failed before answering: nothing is charged."""
    return Outcome.of_error(
        errors.upstream_failed(forwarded.tries),
        channel_id=forwarded.channel_id,
        retries=forwarded.retries,
    )


CHAT = Endpoint("chat/completions", parsing.chat_completions, streams=True)
COMPLETIONS = Endpoint("completions", parsing.completions, streams=True)
EMBEDDINGS = Endpoint("embeddings", parsing.embeddings, streams=False)
chat_completions = functools.partial(serve, endpoint=CHAT)
completions = functools.partial(serve, endpoint=COMPLETIONS)
embeddings = functools.partial(serve, endpoint=EMBEDDINGS)


def passed_on(
    forwarded: Forwarded, status: int, payload: Payload, path: str, *, tell_cost: bool = False
) -> Outcome:
    """A whole answer; `tell_cost`: with what it cost in its usage. Not a 200: the request's
    own fault (a 4xx the channel would give again), returned as it is, and it costs nothing."""
    content = forwarded.content
    if status != 200:
        if metering.json_object(content) is None:
            content = errors.bad_field(None, "The upstream provider refused the request.").body()
        return Outcome(
            status,
            content,
            http.NO_RETRY,
            error_code="upstream_rejected",
            channel_id=forwarded.channel_id,
            retries=forwarded.retries,
        )
    answer = metering.json_object(content)
    return Outcome(
        200,
        content,
        usage=metering.answer_usage(answer, payload, path),
        channel_id=forwarded.channel_id,
        retries=forwarded.retries,
        costed=functools.partial(metering.with_cost, answer, content)
        if tell_cost and answer
        else None,
    )


BROKEN = (
    b"data: %s\n\n"
    % json.dumps(
        {
            "error": {
                "message": "The upstream stream broke off. Retry the request.",
                "type": "server_error",
                "code": "stream_broken",
            }
        }
    ).encode()
)


async def stream(
    call: Call, forwarded: Forwarded, reply: Reply, payload: Payload, path: str
) -> Outcome:
    """Passes an SSE stream on as it comes; it is never retried once its first byte went out.
    Its closing `data: [DONE]` is the outcome's body, sent once the answer is charged."""
    await http.start_stream(call.send, call.id)
    wants_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    events = ChatEvents(wants_usage)
    relayed = await relay_stream(call, reply, forwarded.channel_id, events.feed)
    usage = metering.stream_usage(events.usage, events.content_chunks, payload, path)
    if relayed.error_code == "stream_broken":
        return streamed(forwarded, relayed, usage, BROKEN)
    outcome = streamed(forwarded, relayed, usage, b"".join(events.tail))
    if events.usage_line is not None:
        outcome.costed = functools.partial(events.last_with_cost, events.usage_line)
    return outcome


class ChatEvents:
    """A chat stream's events as they pass: those up to `data: [DONE]` go on as they are, but
    for the usage chunk when only we asked for it; `data: [DONE]` and what follows wait in
    `tail`. Reads the usage and counts the content chunks on the way."""

    def __init__(self, wants_usage: bool) -> None:
        self.wants_usage = wants_usage
        self.usage: object = None
        self.content_chunks = 0
        self.tail: list[bytes] = []
        # The client's usage chunk, held back (at `tail[0]`) to go out with its cost.
        self.usage_line: Payload | None = None

    def feed(self, line: bytes) -> bytes:
        if self.tail or line.startswith(b"data: [DONE]"):
            self.tail.append(line)
            return b""
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if b'"usage"' in data and not _usage_is_null(data):
                chunk = metering.json_object(data)
                if chunk and chunk.get("usage"):
                    self.usage = chunk["usage"]
                    if not chunk.get("choices"):  # the usage chunk, the last but [DONE]
                        if self.wants_usage:  # the client's: it waits for its cost
                            self.usage_line = chunk
                            self.tail.append(line)
                        return b""  # held back, or asked for by us alone
            if b'"content"' in data and b'"content":""' not in data:
                self.content_chunks += 1
        return line

    def last_with_cost(self, chunk: Payload, charged: int) -> bytes:
        """The stream's last bytes, its usage chunk with what the answer cost."""
        first, rest = self.tail[0], self.tail[1:]
        if rest and not rest[0].strip():  # the blank line that ended the usage chunk's event
            rest = rest[1:]
        costed = metering.with_cost(chunk, first[5:].strip(), charged)
        return b"data: " + costed + b"\n\n" + b"".join(rest)


@dataclass(frozen=True, slots=True)
class Relayed:
    """How a stream's relay ended: "" (the channel ended it), "client_disconnected" or
    "stream_broken"; and the time to its first byte."""

    error_code: str
    ttft_ms: int | None


async def relay_stream(
    call: Call, reply: Reply, channel_id: int | None, translate: Callable[[bytes], bytes]
) -> Relayed:
    """Sends what `translate` makes of each line of a channel's stream (in the client's
    protocol; nothing to send is b""), as the lines come, until the channel ends the stream,
    breaks it off (the channel is marked for it) or the client goes away."""
    disconnected = asyncio.ensure_future(http.wait_disconnect(call.receive))
    first_byte: float | None = None
    error_code = ""
    lines = aiter(reply.lines())
    try:
        while True:
            try:
                line = await anext(lines)
                sent = translate(line)
            except StopAsyncIteration:
                break
            except adapters.UpstreamError as error:
                error_code = "stream_broken"
                routing.broke_off(channel_id, str(error))
                break
            except Exception as error:  # a chunk no protocol can read: the stream ends broken
                # The type only: an error's text may quote the answer.
                log.error("Request %s: unreadable stream chunk (%s)", call.id, type(error).__name__)
                error_code = "stream_broken"
                reply.close()
                break
            if disconnected.done():
                error_code = "client_disconnected"
                reply.close()
                break
            if sent:
                first_byte = first_byte or time.perf_counter()
                await call.send({"type": "http.response.body", "body": sent, "more_body": True})
    finally:
        disconnected.cancel()
    ttft_ms = int((first_byte - call.started) * 1000) if first_byte else None
    return Relayed(error_code, ttft_ms)


def streamed(forwarded: Forwarded, relayed: Relayed, usage: Usage, last: bytes) -> Outcome:
    """The outcome of a relayed stream, whatever its protocol: `last` its closing bytes, sent
    once `usage` is charged."""
    return Outcome(
        200,
        last,
        error_code=relayed.error_code,
        usage=usage,
        channel_id=forwarded.channel_id,
        retries=forwarded.retries,
        ttft_ms=relayed.ttft_ms,
        streamed=True,
    )


def _usage_is_null(data: bytes) -> bool:
    return b'"usage":null' in data or b'"usage": null' in data
