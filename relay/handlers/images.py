"""POST /v1/images/generations: the image models, priced per call. The request goes to an
OpenAI-compatible channel as it is (with the channel's model name), and the images come back
as the channel made them; one image a request, charged at the model's price per call (or, for
a model priced per token, by the tokens the channel reports, as `input_tokens` and
`output_tokens`)."""

from typing import TYPE_CHECKING

from relay import http, metering, parsing
from relay.calls import Call, Outcome
from relay.handlers import openai
from relay.metering import Payload, Usage

if TYPE_CHECKING:
    from relay.gateway import Gateway


async def generations(gateway: "Gateway", call: Call) -> Outcome:
    """Authenticates, parses, holds the image's price and forwards with failover; a channel's
    refusal is passed on, free."""
    token, config = await gateway.admit(call)
    payload = parsing.image_generations(await http.read_body(call.scope, call.receive))
    forwarded = await openai.forward(gateway, call, token, config, payload, openai.IMAGES)
    reply = forwarded.reply
    if reply is None:
        return openai.failed(forwarded)
    if reply.status != 200:
        return openai.passed_on(forwarded, reply.status, payload, openai.IMAGES)
    return Outcome(
        200,
        forwarded.content,
        usage=_usage(call, forwarded.content, payload),
        channel_id=forwarded.channel_id,
        retries=forwarded.retries,
    )


def _usage(call: Call, content: bytes, payload: Payload) -> Usage:
    if call.price is None or call.price.per_call:
        return Usage(0, 0, estimated=False)  # the call is what is charged
    reported = (metering.json_object(content) or {}).get("usage")
    if isinstance(reported, dict):
        usage = metering.reported_usage(
            {
                "prompt_tokens": reported.get("input_tokens"),
                "completion_tokens": reported.get("output_tokens"),
            }
        )
        if usage is not None:
            return usage
    # No count: what was held for, marked as estimated.
    return Usage(
        metering.estimate_prompt_tokens(payload, openai.IMAGES),
        metering.completion_allowance(payload, openai.IMAGES),
        estimated=True,
    )
