"""POST /v1/responses: OpenAI's Responses API, served by any channel through chat completions.

The request becomes a chat completion (relay.bridges.responses), which is held for, forwarded
with failover and billed exactly as one sent to /v1/chat/completions; its answer, whole or
streamed, is made into a Response object or the Responses events. Nothing of either is kept:
/v1/responses/{id} answers that no response is stored.
"""

from typing import TYPE_CHECKING

from relay import http, metering
from relay.adapters import Reply
from relay.bridges import responses as bridge
from relay.calls import Call, Outcome
from relay.handlers import openai
from relay.metering import Payload
from relay.routing import Forwarded

if TYPE_CHECKING:
    from relay.gateway import Gateway

CHAT = openai.CHAT.path


async def create(gateway: "Gateway", call: Call) -> Outcome:
    """Authenticates, converts the request, holds and forwards it as a chat completion, and
    converts the answer back; the outcome says what it costs (the gateway charges it)."""
    request, chat, forwarded = await openai.forward_as_chat(gateway, call, bridge.chat_request)
    reply = forwarded.reply
    if reply is None:
        return openai.failed(forwarded)
    if reply.status != 200:  # the channel refused the request itself: passed on, free
        return openai.passed_on(forwarded, reply.status, chat, CHAT)
    created_at = int(call.created_at.timestamp())
    if call.stream:
        events = bridge.ResponseStream(request, call_id=call.id, created_at=created_at)
        return await _stream(call, forwarded, reply, chat, events)
    answer = metering.json_object(forwarded.content)
    usage = metering.answer_usage(answer, chat, CHAT)
    body = bridge.response(request, answer, call_id=call.id, created_at=created_at, usage=usage)
    return Outcome(
        200, body, usage=usage, channel_id=forwarded.channel_id, retries=forwarded.retries
    )


async def stored(gateway: "Gateway", call: Call) -> Outcome:
    """Retrieving, deleting or cancelling a response, or listing its input items: refused,
    saying why (none is kept) and what to send instead."""
    await gateway.admit(call)
    raise bridge.no_stored_responses()


async def _stream(
    call: Call, forwarded: Forwarded, reply: Reply, chat: Payload, events: bridge.ResponseStream
) -> Outcome:
    """Sends the Responses events as the chat chunks come; it is never retried once its first
    byte went out. Its terminal event (completed, incomplete or failed, with the usage) is the
    outcome's body, sent once the answer is charged; every ending is billed."""
    await http.start_stream(call.send, call.id)
    await _send(call, events.opening())
    relayed = await openai.relay_stream(call, reply, forwarded.channel_id, events.feed)
    usage = metering.stream_usage(events.usage, events.chunks, chat, CHAT)
    endings = {"": events.finished, "stream_broken": events.failed}
    ending = endings.get(relayed.error_code)  # none when the client went away
    return openai.streamed(forwarded, relayed, usage, ending(usage) if ending else b"")


async def _send(call: Call, events: bytes) -> None:
    await call.send({"type": "http.response.body", "body": events, "more_body": True})
