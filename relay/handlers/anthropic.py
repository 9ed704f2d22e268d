"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API (as Claude Code and
Anthropic's SDKs send it, with `x-api-key` or a bearer key; any `anthropic-version`).

A Messages request becomes a chat completion request (relay.bridges.anthropic) and goes the way
chat does: the same hold, failover and bill. Its answer comes back as a Message, or as
Anthropic's stream of events, whose last ones (message_delta with the billed usage, and
message_stop) go out once the call is charged. Errors are turned into Anthropic's shape by the
gateway (relay.handlers.ERROR_SHAPES).
"""

import functools
import json
from typing import TYPE_CHECKING

from relay import http, metering, routing
from relay.adapters import Reply
from relay.bridges import anthropic as bridge
from relay.calls import Call, Outcome
from relay.handlers import openai
from relay.metering import Payload
from relay.routing import Forwarded

if TYPE_CHECKING:
    from relay.gateway import Gateway

CHAT = openai.CHAT.path


async def messages(gateway: "Gateway", call: Call) -> Outcome:
    """Authenticates, converts, holds and forwards as chat does; answers a Message."""
    _request, payload, forwarded = await openai.forward_as_chat(gateway, call, bridge.chat_request)
    reply = forwarded.reply
    if reply is None:
        return openai.failed(forwarded)
    if call.stream and reply.status == 200:
        return await _stream(call, forwarded, reply, payload)
    outcome = openai.passed_on(forwarded, reply.status, payload, CHAT)
    if outcome.status == 200 and outcome.usage is not None:
        answer = bridge.message(outcome.body, payload, _message_id(call), outcome.usage)
        outcome.body = json.dumps(answer).encode()
    return outcome


async def count_tokens(gateway: "Gateway", call: Call) -> Outcome:
    """The prompt's tokens by our estimate (what money is held for); it costs nothing."""
    counting = functools.partial(bridge.chat_request, counting=True)
    token, config, _request, payload = await openai.admit_as_chat(gateway, call, counting)
    call.model, call.price = payload["model"], config.prices.get(payload["model"])
    routing.plan(config, token, call.model)  # a model the token cannot call is refused
    tokens = metering.estimate_prompt_tokens(payload, CHAT)
    return Outcome(200, json.dumps({"input_tokens": tokens}).encode())


def _message_id(call: Call) -> str:
    return f"msg_{call.id.hex}"


async def _stream(call: Call, forwarded: Forwarded, reply: Reply, payload: Payload) -> Outcome:
    """Sends Anthropic's events as the chat chunks come; it is never retried once its first
    byte went out. Its last events are the outcome's body, sent once the answer is charged."""
    events = bridge.MessageStream(payload, _message_id(call), call.prompt_estimate)
    await http.start_stream(call.send, call.id)
    await call.send({"type": "http.response.body", "body": events.start(), "more_body": True})
    relayed = await openai.relay_stream(call, reply, forwarded.channel_id, events.feed)
    usage = metering.stream_usage(events.usage, events.content_chunks, payload, CHAT)
    if relayed.error_code == "stream_broken":
        last = bridge.BROKEN
    elif relayed.error_code:  # the client went away
        last = b""
    else:
        last = events.end(usage)
    return openai.streamed(forwarded, relayed, usage, last)
