"""Who calls: the API key of a request, its token, and what the token allows."""

import asyncio
import ipaddress
from datetime import datetime

from relay import errors, http
from relay.config import RelayConfig
from relay.database import DatabaseThreads
from tokens import keys
from tokens.cache import TokenCache, TokenSnapshot, load_snapshot


def api_key(scope: http.Scope) -> str | None:
    """The key of `Authorization: Bearer sk-…` (or of a bare `Authorization`, or `x-api-key`)."""
    authorization = http.header(scope, b"authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
        return authorization.strip()
    key = http.header(scope, b"x-api-key")
    return key.strip() if key else None


# The key hash of a signed-in user's own token, set by relay.playground (the console's
# playground: the console knows a token's hash, never its key). Only our code makes a scope
# with it: the server builds a request's scope, and no header can set this.
KEY_HASH = "switchboard.key_hash"


class TokenLoads:
    """The tokens of keys the cache does not know, read from the database once per key however
    many requests with it arrive meanwhile: a fresh process, or a client's first burst of
    parallel requests, costs one read per key, not one per request."""

    def __init__(self, tokens: TokenCache, db: DatabaseThreads) -> None:
        self.tokens = tokens
        self.db = db
        self.pending: dict[str, asyncio.Future[TokenSnapshot | None]] = {}

    async def snapshot(self, key_hash: str, key: str | None) -> TokenSnapshot | None:
        known, token = self.tokens.get(key_hash)
        if known:
            return token
        # A key of our shape only: anything else is refused without a database read.
        if key is not None and not keys.looks_valid(key):
            return None
        pending = self.pending.get(key_hash)
        if pending is None:
            previous = keys.previous_hashes(key) if key else ()
            pending = asyncio.ensure_future(
                self.db.run(load_snapshot, key_hash=key_hash, previous_hashes=previous)
            )
            self.pending[key_hash] = pending
            pending.add_done_callback(lambda done: self._loaded(key_hash, done))
        # A request that goes away does not take the read from those waiting with it.
        return await asyncio.shield(pending)

    def _loaded(self, key_hash: str, done: asyncio.Future[TokenSnapshot | None]) -> None:
        if self.pending.get(key_hash) is not done:
            return  # tokens changed while it read: what it read may be stale, not cached
        del self.pending[key_hash]
        if not done.cancelled() and done.exception() is None:
            self.tokens.put(key_hash, done.result())

    def changed(self) -> None:
        """A token or a user's grants changed: reads under way are not cached."""
        self.pending.clear()


async def authenticate(scope: http.Scope, loads: TokenLoads) -> TokenSnapshot:
    """The token of the request's key: from the cache, else from the database (and cached)."""
    key = None
    key_hash = scope.get(KEY_HASH)
    if key_hash is None:
        key = api_key(scope)
        if not key:
            raise errors.missing_key(scope["path"])
        key_hash = keys.hash_key(key)
    token = await loads.snapshot(key_hash, key)
    if token is None:
        raise errors.invalid_key(scope["path"])
    return token


def check(
    token: TokenSnapshot, config: RelayConfig, *, now: datetime, client_ip: str | None
) -> None:
    """Refuses a token that is disabled, expired, used from an address it does not allow, or on
    a line its owner may not use."""
    if not token.enabled:
        raise errors.token_disabled(token.name)
    if token.expires_at is not None and token.expires_at <= now:
        raise errors.token_expired(token.name)
    if token.networks and not _allowed(client_ip, token.networks):
        raise errors.ip_not_allowed(token.name, client_ip)
    if not (token.line_granted and token.line_active) or token.line_id not in config.lines:
        raise errors.line_not_granted(token.name, token.line_name)


def _allowed(
    client_ip: str | None, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    if client_ip is None:
        return False
    address = ipaddress.ip_address(client_ip)  # an address: relay.http.client_ip checked it
    return any(address in network for network in networks)
