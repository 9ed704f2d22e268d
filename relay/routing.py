"""Which channels serve a call, and failover among them: a channel that fails is left for the
next, and one that keeps failing (or whose key is refused) is taken out of rotation until the
periodic health check puts it back (relay.health)."""

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from django.conf import settings

from console.lib import invalidation, metrics
from relay import adapters, errors
from relay.adapters import Reply
from relay.config import ChannelSnapshot, ConfigCache, Line, Price, RelayConfig
from relay.database import DatabaseThreads
from relay.metering import Payload
from tokens.cache import TokenSnapshot

log = logging.getLogger(__name__)

# Statuses after which the same request is tried on another channel.
RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})


@dataclass(slots=True)
class Plan:
    """What a call on a model costs, on the token's line, and the channels to try in order."""

    price: Price
    line: Line
    channels: list[ChannelSnapshot]


def plan(config: RelayConfig, token: TokenSnapshot, model: str) -> Plan:
    """Refuses a model we do not price, the token does not allow, or no channel serves."""
    price = config.prices.get(model)
    if price is None:
        raise errors.unknown_model(model)
    if token.allowed_models and model not in token.allowed_models:
        raise errors.model_not_allowed(token.name, model)
    channels = config.candidates(token.line_id, model)
    if not channels:
        if (token.line_id, model) in config.served:
            raise errors.no_channel(model, token.line_name)
        raise errors.model_not_on_line(model, token.line_name)
    return Plan(price, config.lines[token.line_id], channels)


@dataclass(slots=True)
class Forwarded:
    """The channel that answered, after `tries`, with its reply (open on a stream, read whole
    into `content` otherwise); or, with no reply, the last channel of those that all failed."""

    channel_id: int | None
    tries: int
    reply: Reply | None = None
    content: bytes = b""

    @property
    def retries(self) -> int:
        return self.tries - 1


class Router:
    """Failover for one gateway process: counts each channel's failures in a row."""

    def __init__(
        self,
        configs: ConfigCache,
        db: DatabaseThreads,
        session: aiohttp.ClientSession,
        in_background: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.configs = configs
        self.db = db
        self.session = session
        self.in_background = in_background
        self.failures: dict[int, int] = {}  # channel id → failures in a row

    async def forward(
        self,
        channels: list[ChannelSnapshot],
        path: str,
        payload: Payload,
        *,
        stream: bool,
    ) -> Forwarded:
        """Tries channels until one answers something other than a failure of its own. A
        stream's reply is returned open, once its status is known: it is never tried again."""
        tries, channel_id = 0, None
        for channel in channels[: settings.GATEWAY_MAX_TRIES]:
            tries, channel_id = tries + 1, channel.id
            try:
                reply = await adapters.call(self.session, channel, path, payload, stream=stream)
            except adapters.UpstreamError as error:
                self.failed(channel, str(error))
                continue
            if reply.status in RETRYABLE:
                reply.close()
                self.failed(channel, f"HTTP {reply.status}")
                continue
            if reply.status in {401, 403}:
                reply.close()
                self.failed(
                    channel, f"HTTP {reply.status}: the channel's key was refused", disable=True
                )
                continue
            if reply.status == 402:  # our account at the provider is out of credit
                reply.close()
                self.failed(
                    channel, "HTTP 402: the channel's account has no credit left", disable=True
                )
                continue
            self.failures.pop(channel.id, None)
            if stream and reply.status == 200:
                return Forwarded(channel.id, tries, reply)
            try:
                content = await reply.body()
            except adapters.UpstreamError as error:
                self.failed(channel, str(error))
                continue
            return Forwarded(channel.id, tries, reply, content)
        return Forwarded(channel_id, tries)

    def failed(self, channel: ChannelSnapshot, reason: str, *, disable: bool = False) -> None:
        """A channel failed; at the threshold (or at once, with `disable`) it is taken out."""
        count = self.failures.get(channel.id, 0) + 1
        self.failures[channel.id] = count
        if disable or count >= settings.CHANNEL_FAILURE_THRESHOLD:
            self.failures.pop(channel.id, None)
            self.configs.without(channel.id)
            why = reason if disable else f"{count} failures in a row; last: {reason}"
            self.in_background(self.db.run(channel_disable, channel_id=channel.id, reason=why))
        broke_off(channel.id, reason)


def broke_off(channel_id: int | None, reason: str) -> None:
    """A channel failed on a call (a stream that broke off is not counted against it)."""
    log.warning("Channel %s failed: %s", channel_id, reason)
    metrics.upstream_failed(channel_id, reason)


def channel_disable(*, channel_id: int, reason: str) -> None:
    """Takes a channel out of rotation, for every process. Runs in a database thread."""
    from relay.models import Channel

    Channel.objects.get(pk=channel_id).disable(reason)
    Channel.objects.filter(pk=channel_id).update(
        last_error=reason[:500], last_error_at=datetime.now(UTC)
    )
    invalidation.publish(config=True)
