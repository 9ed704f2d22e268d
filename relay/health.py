"""Channel health: a tiny real request to a channel, for staff's "test now" and for the
periodic job that brings disabled channels back once they answer again."""

import asyncio
import dataclasses
import time
from collections.abc import Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
from django.utils import timezone

from console.lib import invalidation
from relay import adapters
from relay.config import ChannelSnapshot
from relay.models import Channel


def _snapshot(channel: Channel) -> ChannelSnapshot:
    # A probe waits at most 30 s, whatever the channel allows a real answer.
    snapshot = ChannelSnapshot.of(channel)
    return dataclasses.replace(snapshot, read_timeout=min(snapshot.read_timeout, 30.0))


async def _probe(channel: ChannelSnapshot, model: str) -> int:
    payload = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    async with aiohttp.ClientSession() as session:
        reply = await adapters.call(session, channel, "chat/completions", payload, stream=False)
        await reply.body()
        return reply.status


def _run[T](coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine to the end from sync code, even where an event loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def channel_test(channel_id: int) -> tuple[bool, int, str]:
    """Sends one tiny chat request; records and returns (ok, latency in ms, detail).

    It reads the channel as saved: the key goes only to the base URL stored with it, never to
    an address from a form or an object changed in memory."""
    channel = Channel.objects.get(pk=channel_id)
    model = channel.model_names[0] if channel.model_names else ""
    started = time.perf_counter()
    try:
        if not model:
            raise adapters.UpstreamError("the channel serves no model")
        status = _run(_probe(_snapshot(channel), model))
        ok = status == 200
        detail = "answered" if ok else f"HTTP {status}"
    except (adapters.UpstreamError, ValueError) as error:
        ok, detail = False, str(error)
    latency = int((time.perf_counter() - started) * 1000)
    now = timezone.now()
    changes = {"last_tested_at": now, "last_test_ok": ok, "last_test_latency_ms": latency}
    if not ok:
        changes.update(last_error=f"Test: {detail}"[:500], last_error_at=now)
    Channel.objects.filter(pk=channel.pk).update(**changes)
    return ok, latency, detail


def channels_put_back(channel_ids: Iterable[int]) -> int:
    """Staff put channels taken out of rotation back in. Returns how many came back."""
    count = Channel.objects.filter(pk__in=list(channel_ids), auto_disabled_at__isnull=False).update(
        auto_disabled_at=None, disabled_reason="", updated_at=timezone.now()
    )
    if count:
        invalidation.publish(config=True)
    return count


def channels_retest() -> int:
    """Tests every channel taken out of rotation; puts back those that answer. Repeat-safe."""
    recovered = 0
    for channel in Channel.objects.filter(enabled=True, auto_disabled_at__isnull=False):
        ok, _latency, _detail = channel_test(channel.pk)
        if ok and Channel.objects.filter(pk=channel.pk, auto_disabled_at__isnull=False).update(
            auto_disabled_at=None, disabled_reason=""
        ):
            recovered += 1
    if recovered:
        invalidation.publish(config=True)
    return recovered
