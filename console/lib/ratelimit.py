"""A fixed-window rate limit on the shared cache (Redis in production)."""

import time
from contextlib import contextmanager, suppress

from django.core.cache import cache


def _bucket(key, window):
    return f"ratelimit:{key}:{int(time.time() // window)}"


def attempts(key, *, window):
    """How many attempts `key` made in this window, without counting one more: for limits
    checked before costly work and counted only when it succeeds."""
    return cache.get(_bucket(key, window), 0)


def limit_reached(key, *, limit, window):
    """Counts one attempt for `key`; True once more than `limit` fell in this window."""
    bucket = _bucket(key, window)
    cache.add(bucket, 0, timeout=window + 1)
    try:
        count = cache.incr(bucket)
    except ValueError:  # expired between add and incr
        cache.set(bucket, 1, timeout=window + 1)
        count = 1
    return count > limit


@contextmanager
def given_back_on_error(key, *, window):
    """Returns the attempt `limit_reached` counted when the work it allowed fails."""
    try:
        yield
    except BaseException:
        with suppress(ValueError):  # the window ended meanwhile
            cache.decr(_bucket(key, window))
        raise
