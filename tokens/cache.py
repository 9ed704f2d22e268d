"""The gateway's in-process cache of tokens.

A request with a known key costs no database read: the gateway keeps a TokenSnapshot per key
hash. When a token, or a line grant, changes, the console publishes the change after its
transaction commits (console.lib.invalidation): every cache in this process drops the token at
once, and, with Redis, so does every other gateway process within a second. Entries also
expire after a while as a last resort, and unknown keys are remembered only briefly.
"""

import time
from dataclasses import dataclass
from datetime import datetime

from console.lib import invalidation


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
    line_id: int
    line_name: str
    line_active: bool
    line_granted: bool
    allowed_models: frozenset
    networks: tuple


def load_snapshot(key_hash, previous_hashes=()):
    """The snapshot of the live token with this key hash, or None. One query; a token found
    under a previous hash key (see TOKEN_HASH_KEY_FALLBACKS) is rehashed under the current."""
    from tokens.models import Token

    tokens = Token.objects.alive().select_related("line")
    if previous_hashes:
        token = tokens.filter(key_hash__in=[key_hash, *previous_hashes]).first()
    else:
        token = tokens.filter(key_hash=key_hash).first()
    if token is None:
        return None
    if token.key_hash != key_hash:
        if not Token.objects.filter(pk=token.pk, key_hash=token.key_hash).update(key_hash=key_hash):
            return None  # rotated or deleted meanwhile: the key in hand is no longer its key
        token.key_hash = key_hash
    return TokenSnapshot(
        id=token.pk,
        user_id=token.user_id,
        name=token.name,
        key_hash=token.key_hash,
        enabled=token.enabled,
        expires_at=token.expires_at,
        unlimited_quota=token.unlimited_quota,
        quota_limit=token.quota_limit,
        line_id=token.line_id,
        line_name=token.line.name,
        line_active=token.line.is_active,
        line_granted=token.line.is_available_to(token.user),
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
            invalidation.subscribe(self)

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

    def apply(self, change):
        """Drops what an invalidation message names."""
        self.drop(
            key_hashes=change.get("keys", ()),
            user_ids=change.get("users", ()),
            everything=bool(change.get("all")),
        )

    def sweep(self):
        """Forgets expired entries, so that memory stays bounded under a flood of bad keys."""
        now = time.monotonic()
        for key_hash, (_snapshot, expiry) in list(self._entries.items()):
            if expiry < now:
                self._entries.pop(key_hash, None)


def publish_invalidation(*, key_hashes=(), user_ids=(), everything=False, config=False):
    """Tells every token cache, here and in other processes, to forget these tokens."""
    invalidation.publish(keys=key_hashes, users=user_ids, everything=everything, config=config)
