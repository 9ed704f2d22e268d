"""How the gateway's in-memory snapshots learn that the console changed something.

A change is a small dict: {"keys": [token key hashes], "users": [user ids], "all": bool,
"config": bool}. `publish` hands it at once to every subscriber in this process and, when
REDIS_URL is set, to every other process through a Redis channel that each gateway process
follows with `listen`. Redis pub/sub can drop messages while a listener reconnects, so a
listener that (re)connects tells its subscribers that everything may have changed.
"""

import asyncio
import json
import logging
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings

log = logging.getLogger(__name__)


def channel():
    """This installation's channel: installations sharing a Redis server do not hear each other."""
    return f"{settings.REDIS_PREFIX}:gateway:invalidate"


EVERYTHING = {"keys": [], "users": [], "all": True, "config": True}
_subscribers = weakref.WeakSet()
_publisher = None


def subscribe(subscriber):
    """`subscriber.apply(change)` is called for every change published in this process."""
    _subscribers.add(subscriber)


def publish(*, keys=(), users=(), everything=False, config=False):
    change = {"keys": list(keys), "users": list(users), "all": everything, "config": config}
    for subscriber in list(_subscribers):
        subscriber.apply(change)
    if not settings.REDIS_URL:
        return
    global _publisher
    try:
        if _publisher is None:
            _publisher = redis.Redis.from_url(settings.REDIS_URL)
        _publisher.publish(channel(), json.dumps(change))
    except redis.RedisError:
        # Snapshots also expire on their own; a lost message delays a change, never breaks it.
        log.exception("Could not publish a gateway invalidation")


async def listen(redis_url, subscriber, *, ready=None):
    """Follows the channel until cancelled, reconnecting after errors."""
    while True:
        client = aioredis.from_url(redis_url)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel())
                subscriber.apply(EVERYTHING)
                if ready is not None:
                    ready.set()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        subscriber.apply(json.loads(message["data"]))
                    except (TypeError, ValueError):
                        log.warning("Ignored a malformed gateway invalidation")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("Gateway invalidation channel lost; reconnecting.", exc_info=True)
            subscriber.apply(EVERYTHING)
            await asyncio.sleep(1)
        finally:
            await client.aclose()
