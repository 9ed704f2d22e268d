"""Upstream adapters, one module per channel kind. One small interface: `call` sends a request
to a channel and returns a Reply, whose status is known before its body is read, so that the
gateway can fail over to another channel before a single byte has gone to the client.

A new kind (Anthropic, Gemini) is a module of its own next to these, in ADAPTERS.
"""

from typing import Protocol

import aiohttp

from relay.adapters import openai_compatible, simulator
from relay.adapters.base import Reply, UpstreamError
from relay.config import ChannelSnapshot
from relay.metering import Payload


class Adapter(Protocol):
    async def call(
        self,
        session: aiohttp.ClientSession,
        channel: ChannelSnapshot,
        path: str,
        payload: Payload,
        *,
        stream: bool,
    ) -> Reply: ...


ADAPTERS: dict[str, Adapter] = {"openai": openai_compatible, "simulator": simulator}


async def call(
    session: aiohttp.ClientSession,
    channel: ChannelSnapshot,
    path: str,
    payload: Payload,
    *,
    stream: bool,
) -> Reply:
    """Sends a request to `path` ("chat/completions", …) of a channel: `payload` is the parsed
    JSON as the client sent it; the channel gets its own name for the model and, on a stream,
    a request for the usage chunk (which the gateway bills by)."""
    return await ADAPTERS[channel.kind].call(
        session, channel, path, for_channel(payload, channel, stream), stream=stream
    )


def for_channel(payload: Payload, channel: ChannelSnapshot, stream: bool) -> Payload:
    """The payload for one channel: its model name, and usage asked for on streams."""
    mapped = payload
    upstream_model = channel.upstream_model(payload["model"])
    if upstream_model != payload["model"]:
        mapped = {**mapped, "model": upstream_model}
    if stream and not (payload.get("stream_options") or {}).get("include_usage"):
        mapped = {
            **mapped,
            "stream_options": {**(payload.get("stream_options") or {}), "include_usage": True},
        }
    return mapped


__all__ = ["ADAPTERS", "Reply", "UpstreamError", "call", "for_channel"]
