"""Upstream adapters. One small interface: `call` sends a request body to an upstream channel
and returns a Reply, whose status is known before its body is read, so that the gateway can
fail over to another channel before a single byte has gone to the client.

New native protocols (Anthropic, Gemini) are added as modules of their own next to these.
"""

from relay.adapters import openai_compatible, simulator
from relay.adapters.base import Reply, UpstreamError

ADAPTERS = {"openai": openai_compatible, "simulator": simulator}


async def call(session, upstream, path, payload, body, *, stream):
    """Sends a request to `path` ("chat/completions", …): `payload` is the parsed JSON with the
    model already mapped to the upstream's name, `body` the same as bytes."""
    return await ADAPTERS[upstream.type].call(session, upstream, path, payload, body, stream=stream)


__all__ = ["ADAPTERS", "Reply", "UpstreamError", "call"]
