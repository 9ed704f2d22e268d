"""What every request does, done once: a key's token read once however many requests bring
it at a time, and an answer's cost written into it without writing the answer again."""

import asyncio
import json

import pytest

from relay import auth
from relay.database import DatabaseThreads
from relay.errors import GatewayError
from relay.metering import with_cost
from tokens import keys
from tokens.cache import TokenCache


class CountedReads:
    """The gateway's database threads, counting what is run in them; with `gate`, each read
    waits for it, so that a test can act while reads are under way."""

    def __init__(self, gate=None):
        self.threads = DatabaseThreads(2, "test-db")
        self.reads = 0
        self.gate = gate

    async def run(self, function, /, *args, **kwargs):
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        return await self.threads.run(function, *args, **kwargs)


def scope_of(key):
    return {
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", f"Bearer {key}".encode())],
    }


@pytest.mark.django_db(transaction=True)
def test_requests_with_a_new_key_at_once_read_its_token_once(token_and_key):
    token, key = token_and_key

    async def twenty_at_once():
        db = CountedReads()
        loads = auth.TokenLoads(TokenCache(in_this_process=False), db)
        found = await asyncio.gather(*(auth.authenticate(scope_of(key), loads) for _ in range(20)))
        db.threads.shutdown()
        return found, db.reads

    found, reads = asyncio.run(twenty_at_once())
    assert {snapshot.id for snapshot in found} == {token.pk}
    assert reads == 1


@pytest.mark.django_db(transaction=True)
def test_a_token_read_while_tokens_change_is_not_kept(token_and_key):
    _token, key = token_and_key

    async def read_while_changing():
        gate = asyncio.Event()
        db = CountedReads(gate)
        cache = TokenCache(in_this_process=False)
        loads = auth.TokenLoads(cache, db)
        first = asyncio.ensure_future(auth.authenticate(scope_of(key), loads))
        await asyncio.sleep(0)
        loads.changed()  # the token changed while it was read
        gate.set()
        await first
        known, _snapshot = cache.get(keys.hash_key(key))
        await auth.authenticate(scope_of(key), loads)  # read again, and kept this time
        kept, _snapshot = cache.get(keys.hash_key(key))
        db.threads.shutdown()
        return known, kept, db.reads

    known, kept, reads = asyncio.run(read_while_changing())
    assert (known, kept, reads) == (False, True, 2)


@pytest.mark.django_db(transaction=True)
def test_a_key_not_of_our_shape_is_refused_without_a_read(token_and_key):
    _token, key = token_and_key
    mistyped = key[:-1] + ("A" if key[-1] != "A" else "B")  # its checksum no longer matches

    async def refused():
        db = CountedReads()
        loads = auth.TokenLoads(TokenCache(in_this_process=False), db)
        with pytest.raises(GatewayError, match="Invalid API key") as error:
            await auth.authenticate(scope_of(mistyped), loads)
        db.threads.shutdown()
        return error.value.code, db.reads

    assert asyncio.run(refused()) == ("invalid_api_key", 0)


ANSWERS = [
    b'{"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}',
    b'{"id": "c",\n  "usage": {\n    "prompt_tokens": 3,\n'
    b'    "details": {"cached_tokens": 1}\n  }\n}\n',
    b'{"usage": {}}',
    b'{"note": "}", "usage": {"vendor": "a}b"}}',
]


@pytest.mark.parametrize("content", ANSWERS)
def test_the_cost_goes_into_the_usage_that_ends_an_answer(content):
    answer = json.loads(content)
    costed = with_cost(answer, content, 1_234)
    assert json.loads(costed) == {**answer, "usage": {**answer["usage"], "cost": 0.001234}}
    # The answer as it came, up to its usage's last field.
    assert costed.startswith(content.rstrip()[:-1].rstrip()[:-1].rstrip())


@pytest.mark.parametrize(
    "content",
    [
        b'{"usage": {"prompt_tokens": 3}, "id": "c"}',  # the usage does not end it
        b'{"usage": {"prompt_tokens": 3, "cost": 0.5}}',  # a cost of the upstream's own
        '{"usage": {"prompt_tokens": 3}}'.encode("utf-16"),  # not UTF-8
    ],
)
def test_an_answer_the_cost_cannot_go_into_as_it_came_is_written_anew(content):
    answer = json.loads(content)
    costed = with_cost(answer, content, 1_234)
    assert json.loads(costed) == {**answer, "usage": {**answer["usage"], "cost": 0.001234}}
    assert costed == json.dumps(json.loads(costed), ensure_ascii=False).encode()


@pytest.mark.django_db(transaction=True)
def test_a_running_gateway_gets_the_interpreter_back_from_its_threads_within_half_a_millisecond():
    """The flush thread's Python work must not hold every request in flight for CPython's
    default 5 ms at a time (the tail at high concurrency, tests/bench/bench_gateway.py)."""
    import sys

    from relay.gateway import SWITCH_INTERVAL_SECONDS, Gateway

    default = sys.getswitchinterval()

    async def main():
        gateway = Gateway()
        await gateway.start()
        try:
            return sys.getswitchinterval()
        finally:
            await gateway.stop()

    try:
        assert asyncio.run(main()) == SWITCH_INTERVAL_SECONDS <= 0.0005
    finally:
        sys.setswitchinterval(default)
