"""What the gateway knows about prices, lines and channels: one immutable snapshot in memory.

The snapshot is loaded from the database at start, and again when staff change a price, a line
or a channel (console.lib.invalidation tells this process directly and the others through
Redis), and every half minute as a last resort.
"""

import random
import time
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction

from console.lib import invalidation


def changed_on_commit():
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


@dataclass(frozen=True, slots=True)
class Line:
    id: int
    name: str
    multiplier: Decimal


@dataclass(slots=True)
class Upstream:
    """A channel as the gateway uses it. `key` is decrypted: never log or show it."""

    id: int
    name: str
    type: str
    base_url: str
    key: str = field(repr=False)
    model_map: dict
    priority: int
    weight: int
    connect_timeout: float
    read_timeout: float
    simulator: dict

    @classmethod
    def of(cls, channel):
        return cls(
            id=channel.pk,
            name=channel.name,
            type=channel.type,
            base_url=channel.base_url.rstrip("/"),
            key=channel.get_key(),
            model_map=dict(channel.model_map),
            priority=channel.priority,
            weight=max(channel.weight, 1),
            connect_timeout=channel.connect_timeout,
            read_timeout=channel.read_timeout,
            simulator=dict(channel.simulator),
        )

    def upstream_model(self, model):
        return self.model_map.get(model, model)


@dataclass
class RelayConfig:
    loaded_at: float
    prices: dict  # model → Price, enabled models only
    lines: dict  # group id → Line, active lines only
    routes: dict  # (group id, model) → [(priority, [Upstream], [weight])], highest first
    served: set = field(default_factory=set)  # (group id, model) with a channel, in rotation or not

    def models_on_line(self, group_id):
        return sorted({model for (line, model) in self.routes if line == group_id})

    def candidates(self, group_id, model):
        """Channels to try, in order: by priority, weighted random among equals."""
        ordered = []
        for _priority, upstreams, weights in self.routes.get((group_id, model), ()):
            if len(upstreams) == 1:
                ordered.extend(upstreams)
                continue
            pool, pool_weights = list(upstreams), list(weights)
            while pool:
                pick = random.choices(range(len(pool)), weights=pool_weights)[0]  # noqa: S311
                ordered.append(pool.pop(pick))
                pool_weights.pop(pick)
        return ordered

    def without(self, channel_id):
        """A copy that no longer routes to one channel (it was just taken out of rotation)."""
        routes = {}
        for key, tiers in self.routes.items():
            kept = []
            for priority, upstreams, weights in tiers:
                pairs = [
                    (u, w) for u, w in zip(upstreams, weights, strict=True) if u.id != channel_id
                ]
                if pairs:
                    kept.append((priority, [u for u, _ in pairs], [w for _, w in pairs]))
            if kept:
                routes[key] = kept
        return RelayConfig(self.loaded_at, self.prices, self.lines, routes, self.served)


def load_config():
    """Reads the snapshot. Runs in a database thread."""
    from billing.models import Group, ModelPrice
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
        )
        for p in ModelPrice.objects.filter(enabled=True)
    }
    lines = {
        g.id: Line(id=g.id, name=g.name, multiplier=g.multiplier)
        for g in Group.objects.filter(is_active=True)
    }
    tiers = {}
    served = set()
    for channel in Channel.objects.filter(enabled=True).prefetch_related("groups"):
        lines_served = [group.id for group in channel.groups.all() if group.id in lines]
        pairs = [(line, model) for line in lines_served for model in channel.model_names]
        served.update(pair for pair in pairs if pair[1] in prices)
        if channel.auto_disabled_at is not None:
            continue
        upstream = Upstream.of(channel)
        for line, model in pairs:
            if model in prices:
                tiers.setdefault((line, model), {}).setdefault(upstream.priority, []).append(
                    upstream
                )
    routes = {
        key: [
            (priority, upstreams, [u.weight for u in upstreams])
            for priority, upstreams in sorted(by_priority.items(), reverse=True)
        ]
        for key, by_priority in tiers.items()
    }
    return RelayConfig(time.monotonic(), prices, lines, routes, served)
