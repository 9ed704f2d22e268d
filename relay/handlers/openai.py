"""POST /v1/chat/completions, /v1/completions and /v1/embeddings: OpenAI requests, passed to an
OpenAI-compatible channel as they are (with the channel's model name), and its answers passed
back as they are, whole or streamed as server-sent events.

Money is held for the most the request can cost before it is forwarded; what is charged is the
usage the channel reports, or our estimate when it reports none (marked as such in the log).
"""

import asyncio
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay import adapters, errors, http, metering, parsing, routing
from relay.adapters import Reply
from relay.calls import Call, Outcome
from relay.metering import Payload
from relay.routing import Forwarded

if TYPE_CHECKING:
    from relay.gateway import Gateway


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
    call.model, call.price = payload["model"], config.prices.get(payload["model"])
    call.stream = endpoint.streams and payload.get("stream") is True
    plan = routing.plan(config, token, call.model)
    estimate = metering.hold_amount(
        plan.price,
        plan.line,
        metering.estimate_prompt_tokens(payload, endpoint.path),
        metering.completion_allowance(payload, endpoint.path),
    )
    await gateway.hold(call, token, plan, estimate)
    forwarded = await gateway.router.forward(
        plan.channels, endpoint.path, payload, stream=call.stream
    )
    reply = forwarded.reply
    if reply is None:
        return Outcome.of_error(
            errors.upstream_failed(forwarded.tries),
            channel_id=forwarded.channel_id,
            retries=forwarded.retries,
        )
    if call.stream and reply.status == 200:
        return await stream(call, forwarded, reply, payload, endpoint.path)
    return passed_on(forwarded, reply.status, payload, endpoint.path)


CHAT = Endpoint("chat/completions", parsing.chat_completions, streams=True)
COMPLETIONS = Endpoint("completions", parsing.completions, streams=True)
EMBEDDINGS = Endpoint("embeddings", parsing.embeddings, streams=False)
chat_completions = functools.partial(serve, endpoint=CHAT)
completions = functools.partial(serve, endpoint=COMPLETIONS)
embeddings = functools.partial(serve, endpoint=EMBEDDINGS)


def passed_on(forwarded: Forwarded, status: int, payload: Payload, path: str) -> Outcome:
    """A whole answer. Not a 200: the request's own fault (a 4xx the channel would give again),
    returned as it is, and it costs nothing."""
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
    return Outcome(
        200,
        content,
        usage=metering.answer_usage(content, payload, path),
        channel_id=forwarded.channel_id,
        retries=forwarded.retries,
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
    usage, content_chunks, first_byte, tail, error_code = await _pass_events(
        call, reply, wants_usage, forwarded.channel_id
    )
    return Outcome(
        200,
        b"".join(tail),
        error_code=error_code,
        usage=metering.stream_usage(usage, content_chunks, payload, path),
        channel_id=forwarded.channel_id,
        retries=forwarded.retries,
        ttft_ms=int((first_byte - call.started) * 1000) if first_byte else None,
        streamed=True,
    )


async def _pass_events(
    call: Call, reply: Reply, wants_usage: bool, channel_id: int | None
) -> tuple[object, int, float | None, list[bytes], str]:
    """Sends the events up to `data: [DONE]`, reading the usage chunk on the way (and leaving
    it out if only we asked for it). Returns (usage, content chunks, time of the first byte,
    the events from `data: [DONE]` on, error code)."""
    send = call.send
    disconnected = asyncio.ensure_future(http.wait_disconnect(call.receive))
    usage: object = None
    content_chunks, first_byte, error_code = 0, None, ""
    tail: list[bytes] = []
    try:
        async for line in reply.lines():
            if disconnected.done():
                error_code = "client_disconnected"
                reply.close()
                break
            if tail or line.startswith(b"data: [DONE]"):
                tail.append(line)
                continue
            if line.startswith(b"data:"):
                data = line[5:].strip()
                if b'"usage"' in data and not _usage_is_null(data):
                    chunk = metering.json_object(data)
                    if chunk and chunk.get("usage"):
                        usage = chunk["usage"]
                        if not wants_usage and not chunk.get("choices"):
                            continue  # asked for by us, not by the client
                if b'"content"' in data and b'"content":""' not in data:
                    content_chunks += 1
            if first_byte is None:
                first_byte = time.perf_counter()
            await send({"type": "http.response.body", "body": line, "more_body": True})
    except adapters.UpstreamError as error:
        error_code = "stream_broken"
        routing.broke_off(channel_id, str(error))
        tail = [BROKEN]
    finally:
        disconnected.cancel()
    return usage, content_chunks, first_byte, tail, error_code


def _usage_is_null(data: bytes) -> bool:
    return b'"usage":null' in data or b'"usage": null' in data
