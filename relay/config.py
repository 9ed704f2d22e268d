"""What the gateway knows about prices, lines and channels: one immutable snapshot in memory.

The snapshot is loaded from the database at start, and again when staff change a price, a line
or a channel (console.lib.invalidation tells this process directly and the others through
Redis), and every half minute as a last resort.
"""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import transaction

from billing.pricing import PART_MULTIPLIERS, Rates
from console.lib import invalidation

if TYPE_CHECKING:
    from relay.models import Channel

log = logging.getLogger(__name__)

# The longest a snapshot is used without a reload, should an invalidation have been lost.
CONFIG_MAX_AGE = 30.0


def changed_on_commit() -> None:
    """Staff changed something the gateway routes or prices by; tell every process."""
    transaction.on_commit(lambda: invalidation.publish(config=True))


@dataclass(frozen=True, slots=True)
class Price:
    model: str
    vendor: str
    kind: str
    per_call: bool
    model_multiplier: Decimal
    completion_multiplier: Decimal
    call_price: int
    created: int
    rates: Rates  # completion's and the priced-apart parts' multipliers


@dataclass(frozen=True, slots=True)
class Line:
    id: int
    name: str
    multiplier: Decimal


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    """A channel as the gateway uses it. `key` is decrypted: never log or show it."""

    id: int
    name: str
    kind: str  # Channel.Type: which adapter speaks to it
    base_url: str
    key: str = field(repr=False)
    model_map: dict[str, str]
    priority: int
    weight: int
    connect_timeout: float
    read_timeout: float
    simulator: dict[str, Any]

    @classmethod
    def of(cls, channel: "Channel") -> "ChannelSnapshot":
        return cls(
            id=channel.pk,
            name=channel.name,
            kind=channel.type,
            base_url=channel.base_url.rstrip("/"),
            key=channel.get_key(),
            model_map=dict(channel.model_map),
            priority=channel.priority,
            weight=max(channel.weight, 1),
            connect_timeout=channel.connect_timeout,
            read_timeout=channel.read_timeout,
            simulator=dict(channel.simulator),
        )

    def upstream_model(self, model: str) -> str:
        """The channel's own name for a model."""
        return self.model_map.get(model, model)


# Channels of one priority on a route, with their weights.
Tier = tuple[int, list[ChannelSnapshot], list[int]]


@dataclass
class RelayConfig:
    loaded_at: float
    prices: dict[str, Price]  # enabled models only
    lines: dict[int, Line]  # line id → line, active lines only
    routes: dict[tuple[int, str], list[Tier]]  # (line id, model) → tiers, highest first
    # (line id, model) with a channel, in rotation or not
    served: set[tuple[int, str]] = field(default_factory=set)

    def models_on_line(self, line_id: int) -> list[str]:
        return sorted({model for (line, model) in self.routes if line == line_id})

    def candidates(self, line_id: int, model: str) -> list[ChannelSnapshot]:
        """Channels to try, in order: by priority, weighted random among equals."""
        ordered: list[ChannelSnapshot] = []
        for _priority, channels, weights in self.routes.get((line_id, model), ()):
            if len(channels) == 1:
                ordered.extend(channels)
                continue
            pool, pool_weights = list(channels), list(weights)
            while pool:
                pick = random.choices(range(len(pool)), weights=pool_weights)[0]  # noqa: S311
                ordered.append(pool.pop(pick))
                pool_weights.pop(pick)
        return ordered

    def without(self, channel_id: int) -> "RelayConfig":
        """A copy that no longer routes to one channel (it was just taken out of rotation)."""
        routes = {}
        for key, tiers in self.routes.items():
            kept: list[Tier] = []
            for priority, channels, weights in tiers:
                pairs = [
                    (c, w) for c, w in zip(channels, weights, strict=True) if c.id != channel_id
                ]
                if pairs:
                    kept.append((priority, [c for c, _ in pairs], [w for _, w in pairs]))
            if kept:
                routes[key] = kept
        return RelayConfig(self.loaded_at, self.prices, self.lines, routes, self.served)


def load_config() -> RelayConfig:
    """Reads the snapshot. Runs in a database thread."""
    from billing import models as billing
    from relay.models import Channel

    prices = {
        p.model: Price(
            model=p.model,
            vendor=p.vendor,
            kind=p.kind,
            per_call=p.is_per_call,
            model_multiplier=p.model_multiplier,
            completion_multiplier=p.completion_multiplier,
            call_price=p.call_price,
            created=int(p.updated_at.timestamp()),
            rates=Rates(p.completion_multiplier, *(getattr(p, n) for n in PART_MULTIPLIERS)),
        )
        for p in billing.ModelPrice.objects.filter(enabled=True)
    }
    lines = {
        line.id: Line(id=line.id, name=line.name, multiplier=line.multiplier)
        for line in billing.Line.objects.filter(is_active=True)
    }
    tiers: dict[tuple[int, str], dict[int, list[ChannelSnapshot]]] = {}
    served: set[tuple[int, str]] = set()
    for row in Channel.objects.filter(enabled=True).prefetch_related("lines"):
        lines_served = [line.id for line in row.lines.all() if line.id in lines]
        pairs = [(line, model) for line in lines_served for model in row.model_names]
        served.update(pair for pair in pairs if pair[1] in prices)
        if row.auto_disabled_at is not None:
            continue
        channel = ChannelSnapshot.of(row)
        for line, model in pairs:
            if model in prices:
                tiers.setdefault((line, model), {}).setdefault(channel.priority, []).append(channel)
    routes = {
        key: [
            (priority, channels, [c.weight for c in channels])
            for priority, channels in sorted(by_priority.items(), reverse=True)
        ]
        for key, by_priority in tiers.items()
    }
    return RelayConfig(time.monotonic(), prices, lines, routes, served)


class ConfigCache:
    """The gateway's current snapshot: reloaded once staff changed something (`changed`, from
    an invalidation), and after CONFIG_MAX_AGE seconds whatever happened. Event loop only."""

    def __init__(self, load: Callable[[], Awaitable[RelayConfig]]) -> None:
        self.load = load
        self.config: RelayConfig | None = None
        self.version = 0  # bumped by every change of prices, lines or channels
        self.loaded_version = -1
        self.lock = asyncio.Lock()

    def changed(self) -> None:
        self.version += 1

    def fresh(self) -> RelayConfig | None:
        """The snapshot if it needs no reload, else None (then `reload`)."""
        config = self.config
        if (
            config is not None
            and self.loaded_version == self.version
            and time.monotonic() - config.loaded_at < CONFIG_MAX_AGE
        ):
            return config
        return None

    async def reload(self) -> RelayConfig:
        """A fresh snapshot; the last one if the database cannot give one (none: it raises)."""
        async with self.lock:
            config = self.fresh()  # another request may have reloaded it while we waited
            if config is not None:
                return config
            version = self.version  # changes from now on call for another reload
            try:
                self.config = await self.load()
                self.loaded_version = version
            except Exception:
                if self.config is None:
                    raise
                log.exception("Could not reload the gateway config; keeping the last one")
            return self.config

    def without(self, channel_id: int) -> None:
        """Stops routing to a channel at once, until the next reload."""
        if self.config is not None:
            self.config = self.config.without(channel_id)
