import asyncio
import threading
import time

import pytest

from billing.models import LineGrant
from console.lib import invalidation
from tokens.cache import TokenCache, load_snapshot, publish_invalidation
from tokens.services import token_create, token_rotate, token_set_enabled, token_update


@pytest.fixture
def token_and_key(alice, default_line):
    return token_create(user=alice, name="backend", line=default_line)


def cached(cache, token):
    snapshot = load_snapshot(token.key_hash)
    cache.put(token.key_hash, snapshot)
    return snapshot


def test_a_known_token_is_served_from_the_cache_until_it_changes(
    token_and_key, django_capture_on_commit_callbacks
):
    token, _key = token_and_key
    cache = TokenCache()
    assert cached(cache, token).enabled
    assert cache.get(token.key_hash) == (True, load_snapshot(token.key_hash))
    with django_capture_on_commit_callbacks(execute=True):
        token_set_enabled(token=token, enabled=False)
    assert cache.get(token.key_hash) == (False, None)


@pytest.mark.parametrize("change", ["edit", "rotate", "grant"])
def test_every_kind_of_change_drops_the_cached_token(
    token_and_key, alice, django_capture_on_commit_callbacks, change
):
    token, _key = token_and_key
    cache = TokenCache()
    cached(cache, token)
    with django_capture_on_commit_callbacks(execute=True):
        if change == "edit":
            token.name = "renamed"
            token_update(token=token)
        elif change == "rotate":
            token_rotate(token=token)
        else:
            LineGrant.objects.create(line=token.line, user=alice)
    assert cache.get(token.key_hash)[0] is False


def test_an_unknown_key_is_remembered_briefly_and_forgotten_when_created(
    alice, default_line, django_capture_on_commit_callbacks
):
    cache = TokenCache(missing_ttl=5)
    cache.put("a" * 64, None)
    assert cache.get("a" * 64) == (True, None)
    with django_capture_on_commit_callbacks(execute=True):
        token, _key = token_create(user=alice, name="new", line=default_line)
    cache.put(token.key_hash, None)  # somebody tried the key before it existed
    publish_invalidation(key_hashes=[token.key_hash])
    assert cache.get(token.key_hash) == (False, None)


def test_entries_expire_as_a_last_resort(token_and_key):
    token, _key = token_and_key
    cache = TokenCache(ttl=0.05)
    cached(cache, token)
    time.sleep(0.1)
    assert cache.get(token.key_hash) == (False, None)


class ListeningProcess:
    """A token cache with its own event loop in a thread, like a gateway worker."""

    def __init__(self, redis_url):
        # Not registered in this process: only Redis can tell it about changes.
        self.cache = TokenCache(in_this_process=False)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(redis_url,), daemon=True)
        self.thread.start()

    def _run(self, redis_url):
        asyncio.set_event_loop(self.loop)
        ready = asyncio.Event()

        async def main():
            task = asyncio.create_task(invalidation.listen(redis_url, self.cache, ready=ready))
            await ready.wait()
            self.ready.set()
            self._task = task
            await asyncio.gather(task, return_exceptions=True)

        self.loop.run_until_complete(main())

    def stop(self):
        self.loop.call_soon_threadsafe(self._task.cancel)
        self.thread.join(timeout=5)


@pytest.mark.redis
def test_a_change_reaches_two_other_processes_through_redis_within_a_second(
    token_and_key, settings, django_capture_on_commit_callbacks
):
    token, _key = token_and_key
    workers = [ListeningProcess(settings.REDIS_URL) for _ in range(2)]
    try:
        for worker in workers:
            assert worker.ready.wait(5)
            cached(worker.cache, token)
        started = time.monotonic()
        with django_capture_on_commit_callbacks(execute=True):
            token_set_enabled(token=token, enabled=False)
        while any(w.cache.get(token.key_hash)[0] for w in workers):
            assert time.monotonic() - started < 1.0, "invalidation took longer than a second"
            time.sleep(0.005)
    finally:
        for worker in workers:
            worker.stop()
