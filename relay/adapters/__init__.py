"""Upstream adapters, one module per channel kind. One small interface: `call` sends a request
to a channel and returns a Reply, whose status is known before its body is read, so that the
gateway can fail over to another channel before a single byte has gone to the client.

A new kind (Anthropic, Gemini) is a module of its own next to these, in ADAPTERS.
"""

import functools
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from relay.adapters import anthropic, gemini, openai_compatible, simulator
from relay.adapters.base import Reply, UpstreamError
from relay.bridges.anthropic import CACHE_MARKS
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


ADAPTERS: dict[str, Adapter] = {
    "openai": openai_compatible,
    "anthropic": anthropic,
    "gemini": gemini,
    "simulator": simulator,
}


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
    """The payload for one channel: its model name, usage asked for on streams, and the cache
    breakpoints a bridged request carries only where the channel reads them."""
    mapped = payload
    if CACHE_MARKS in payload:
        mapped = _unmarked(payload, keep=channel.kind in KINDS_WITH_CACHE_CONTROL)
    upstream_model = channel.upstream_model(payload["model"])
    if upstream_model != payload["model"]:
        mapped = {**mapped, "model": upstream_model}
    if _limit_as_max_tokens(payload, channel):
        # Most OpenAI-compatible servers read an answer's limit as max_tokens only (DeepSeek
        # ignores max_completion_tokens), and the money held counts on that limit; OpenAI's
        # own reasoning models take max_completion_tokens alone.
        limit = mapped["max_completion_tokens"]
        mapped = {k: v for k, v in mapped.items() if k != "max_completion_tokens"}
        mapped["max_tokens"] = limit
    if stream and not (payload.get("stream_options") or {}).get("include_usage"):
        mapped = {
            **mapped,
            "stream_options": {**(payload.get("stream_options") or {}), "include_usage": True},
        }
    return mapped


def _limit_as_max_tokens(payload: Payload, channel: ChannelSnapshot) -> bool:
    return (
        "max_completion_tokens" in payload
        and "max_tokens" not in payload
        and channel.kind == "openai"
        and not _openai_itself(channel.base_url)
    )


@functools.lru_cache(maxsize=256)
def _openai_itself(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    return host == "api.openai.com" or host.endswith(".openai.azure.com")


# Channel kinds that read cache_control on a message's parts; others may refuse the request.
KINDS_WITH_CACHE_CONTROL = frozenset({"anthropic", "simulator"})


def _unmarked(payload: Payload, *, keep: bool) -> Payload:
    """A request without the bridge's mark, and without its cache breakpoints unless `keep`."""
    unmarked = {name: value for name, value in payload.items() if name != CACHE_MARKS}
    if keep:
        return unmarked
    messages = []
    for message in payload.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            parts = [
                {k: v for k, v in part.items() if k != "cache_control"}
                if isinstance(part, dict)
                else part
                for part in content
            ]
            if all(isinstance(p, dict) and p.get("type") == "text" for p in parts):
                # Text alone, as the bridge sends it unmarked: for channels that take no parts.
                message = {**message, "content": "\n\n".join(str(p.get("text")) for p in parts)}
            else:
                message = {**message, "content": parts}
        messages.append(message)
    return {**unmarked, "messages": messages}


__all__ = ["ADAPTERS", "Reply", "UpstreamError", "call", "for_channel"]
