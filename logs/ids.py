"""Request ids: UUID version 7, time-ordered, made in the gateway before a row is written."""

import os
import time
import uuid
from datetime import UTC, datetime


def uuid7():
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= int.from_bytes(os.urandom(10)) & ((1 << 80) - 1)
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
