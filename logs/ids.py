"""Request ids: UUID version 7, time-ordered, made in the gateway before a row is written."""

import os
import threading
import time
import uuid
from datetime import UTC, datetime

# The random bits of ids come from the OS's CSPRNG 4 KiB at a time (409 ids), not in one
# system call per request. Each thread draws from a pool of its own, so no two threads take the
# same bytes and none waits for a lock; a child process starts without the parent's pools, so
# its ids never repeat the parent's.
_POOL_SIZE = 4096
_ID_BYTES = 10
_pools = threading.local()


def _forget_pools():
    global _pools
    _pools = threading.local()


os.register_at_fork(after_in_child=_forget_pools)


def _random_bits():
    """80 fresh random bits, never handed out twice."""
    pools = _pools
    start = getattr(pools, "taken", _POOL_SIZE)
    if start + _ID_BYTES > _POOL_SIZE:
        pools.bytes, start = os.urandom(_POOL_SIZE), 0
    pools.taken = start + _ID_BYTES
    return int.from_bytes(pools.bytes[start : start + _ID_BYTES])


def uuid7():
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= _random_bits()
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


def made_at(request_id):
    """When a request id was made: its first 48 bits, in Unix milliseconds (None when they lie
    beyond what a datetime holds: no id of ours)."""
    try:
        return datetime.fromtimestamp((request_id.int >> 80) / 1000, tz=UTC)
    except (OverflowError, ValueError):
        return None
