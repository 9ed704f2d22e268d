"""The gateway's in-process cache of tokens, and how it learns that a token changed.

A request with a known key costs no database read: the gateway keeps a TokenSnapshot per key
hash. When a token changes, billing grants change, or a token is deleted, the console calls
`publish_invalidation` after the transaction commits. That drops the entries in every cache of
this process at once, and, when REDIS_URL is set, publishes the change on a Redis channel to
which every gateway process listens, so that all workers forget the token within a second.
A listener that (re)connects drops everything it holds, since it may have missed messages, and
entries also expire after a while as a last resort.
"""

import asyncio
import json
import logging
import time
import weakref
from dataclasses import dataclass
from datetime import datetime

import redis
import redis.asyncio as aioredis
from django.conf import settings

log = logging.getLogger(__name__)

CHANNEL = "tokens:invalidate"
_caches = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class TokenSnapshot:
    """What the gateway needs to authorise a request, read once from the database."""

    id: int
    user_id: int
    name: str
    key_hash: str
    enabled: bool
    expires_at: datetime | None
    unlimited_quota: bool
    quota_limit: int | None
    group_id: int
    group_name: str
    group_active: bool
    group_granted: bool
    allowed_models: frozenset
    networks: tuple


def load_snapshot(key_hash):
    """The snapshot of the live token with this key hash, or None. One query."""
    from tokens.models import Token

    token = Token.objects.alive().select_related("group").filter(key_hash=key_hash).first()
    if token is None:
        return None
    return TokenSnapshot(
        id=token.pk,
        user_id=token.user_id,
        name=token.name,
        key_hash=token.key_hash,
        enabled=token.enabled,
        expires_at=token.expires_at,
        unlimited_quota=token.unlimited_quota,
        quota_limit=token.quota_limit,
        group_id=token.group_id,
        group_name=token.group.name,
        group_active=token.group.is_active,
        group_granted=token.group.is_available_to(token.user),
        allowed_models=frozenset(token.allowed_models),
        networks=tuple(token.networks()),
    )


class TokenCache:
    """Key hash → TokenSnapshot (or None for an unknown key), with a time to live."""

    def __init__(self, ttl=60.0, missing_ttl=5.0, *, in_this_process=True):
        self.ttl = ttl
        self.missing_ttl = missing_ttl
        self._entries = {}
        if in_this_process:
            # Changes made in this process reach it directly, without Redis.
            _caches.add(self)

    def __len__(self):
        return len(self._entries)

    def get(self, key_hash):
        """(True, snapshot-or-None) when cached and fresh, (False, None) when it must be loaded."""
        entry = self._entries.get(key_hash)
        if entry is None or entry[1] < time.monotonic():
            return False, None
        return True, entry[0]

    def put(self, key_hash, snapshot):
        ttl = self.ttl if snapshot is not None else self.missing_ttl
        self._entries[key_hash] = (snapshot, time.monotonic() + ttl)

    def drop(self, *, key_hashes=(), user_ids=(), everything=False):
        if everything:
            self._entries.clear()
            return
        for key_hash in key_hashes:
            self._entries.pop(key_hash, None)
        if user_ids:
            users = set(user_ids)
            for key_hash, (snapshot, _expiry) in list(self._entries.items()):
                if snapshot is not None and snapshot.user_id in users:
                    self._entries.pop(key_hash, None)

    async def listen(self, redis_url, *, ready=None):
        """Follows the invalidation channel until cancelled; reconnects after errors."""
        while True:
            client = aioredis.from_url(redis_url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    # Anything may have changed while we were not listening.
                    self.drop(everything=True)
                    if ready is not None:
                        ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("Token invalidation channel lost; reconnecting.", exc_info=True)
                self.drop(everything=True)
                await asyncio.sleep(1)
            finally:
                await client.aclose()

    def apply(self, data):
        try:
            change = json.loads(data)
        except (TypeError, ValueError):
            return
        self.drop(
            key_hashes=change.get("keys", ()),
            user_ids=change.get("users", ()),
            everything=bool(change.get("all")),
        )


def publish_invalidation(*, key_hashes=(), user_ids=(), everything=False):
    """Tells every token cache, here and in other processes, to forget these tokens."""
    for cache in list(_caches):
        cache.drop(key_hashes=key_hashes, user_ids=user_ids, everything=everything)
    if not settings.REDIS_URL:
        return
    message = json.dumps({"keys": list(key_hashes), "users": list(user_ids), "all": everything})
    try:
        _publisher().publish(CHANNEL, message)
    except redis.RedisError:
        # The entries expire on their own; a lost message delays, never breaks, a change.
        log.exception("Could not publish a token invalidation")


_client = None


def _publisher():
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL)
    return _client
