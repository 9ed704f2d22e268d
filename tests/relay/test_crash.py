"""A gateway process killed under load loses nothing it answered: every answer a client
received has exactly one log row and one charge, once the next process has replayed its
journal. And several processes holding parts of one account serve every request it covers."""

import asyncio
import io
import re
import time
from decimal import Decimal

import aiohttp
import pytest
from django.core.management import call_command
from django.db.models import Sum

from billing import services
from billing.models import Account, Hold, LedgerEntry, ModelPrice
from logs.models import RequestLog, UsageMinute, UsagePending
from tests.conftest import balance_of, ledger_sum, make_user
from tests.relay.conftest import make_channel, wait_until
from tests.relay.processes import GatewayProcess
from tokens.services import token_create

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

CHAT = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}


async def _one(session, url, key, stream):
    """One request; the request id if the whole answer arrived, else None."""
    body = {**CHAT, "stream": True} if stream else CHAT
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
            if r.status != 200:
                return None, (await r.json())["error"]["code"]
            payload = await r.read()  # raises if the connection breaks before the end
            if stream and not payload.rstrip().endswith(b"data: [DONE]"):
                return None, "incomplete"
            return r.headers["x-request-id"], "ok"
    except (aiohttp.ClientError, TimeoutError):
        return None, "broken"


def load(urls, keys, *, clients, until, stop_after_refusals=None, streams=True):
    """Clients each sending one request after another (every other one streamed, with
    `streams`), to the given gateways in turn, with the given keys in turn, until `until()` or,
    with `stop_after_refusals`, until each has been refused that many times in a row. Returns
    (answered request ids, outcomes)."""

    async def client(number, session, answered, outcomes):
        refusals = 0
        sent = 0
        key = keys[number % len(keys)]
        while not until():
            url = urls[(number + sent) % len(urls)]
            stream = streams and sent % 2 == 1
            request_id, outcome = await _one(session, url, key, stream=stream)
            sent += 1
            outcomes.append(outcome)
            if request_id:
                answered.append(request_id)
            refusals = refusals + 1 if outcome == "insufficient_quota" else 0
            if outcome == "broken":
                await asyncio.sleep(0.05)
            if stop_after_refusals and refusals >= stop_after_refusals:
                return

    async def main():
        answered, outcomes = [], []
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await asyncio.gather(*(client(n, session, answered, outcomes) for n in range(clients)))
        return answered, outcomes

    return asyncio.run(main())


@pytest.fixture
def gateways(tmp_path):
    started = []

    def start(name, **environment):
        process = GatewayProcess(tmp_path, name, **environment).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def served(upstream, prices, default_line, alice):
    make_channel(upstream)
    return alice


def test_a_gateway_killed_under_load_loses_no_answer(served, gateways):
    alice = served
    services.balance_credit(user=alice, amount=100_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    _token, key = token_create(user=alice, name="load", line=_line(), notify=False)
    # No flush before the kill: everything it answered is in its journal alone.
    first = gateways("first", GATEWAY_FLUSH_SECONDS=3600)
    kill_at = time.monotonic() + 3
    answered, outcomes = load(
        [first.url], [key], clients=30, until=lambda: time.monotonic() > kill_at
    )
    first.kill()
    assert len(answered) > 1_000, outcomes[:20]

    second = gateways("second")
    wait_until(lambda: "Replayed the journal" in second.log(), timeout=30, message="a replay")
    wait_until(lambda: not Hold.objects.exists(), timeout=30, message="the holds released")

    logged = set(RequestLog.objects.filter(id__in=answered).values_list("id", flat=True))
    missing = len(answered) - len(logged)
    charged = -LedgerEntry.objects.filter(kind="usage").aggregate(s=Sum("amount"))["s"]
    cost = RequestLog.objects.aggregate(s=Sum("cost"))["s"]
    print(
        f"\nanswered {len(answered)}, logged {len(logged)}, charged {charged} = logged cost {cost}"
    )
    assert missing == 0
    assert charged == cost
    assert balance_of(alice) == ledger_sum(alice) == 100_000_000 - cost
    assert Account.objects.get(user=alice).held == 0
    replayed = re.search(r"without settling: (\d+) request records settled", second.log())
    assert int(replayed.group(1)) >= len(answered)


def test_a_gateway_killed_mid_traffic_is_settled_by_the_replay_command(served, gateways):
    """Killed during traffic and flushes (not after): some answers are cut off, none is lost
    or charged twice. No gateway starts again: staff run the replay command instead."""
    alice = served
    services.balance_credit(user=alice, amount=100_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    _token, key = token_create(user=alice, name="load", line=_line(), notify=False)
    first = gateways("first", GATEWAY_FLUSH_SECONDS="0.2")
    started = time.monotonic()
    killed = []

    def until():
        if not killed and time.monotonic() - started > 2.5:
            killed.append(True)
            first.kill()
        return time.monotonic() - started > 3

    answered, outcomes = load([first.url], [key], clients=30, until=until)
    assert "broken" in outcomes
    logged = RequestLog.objects.count()
    assert replay_journals("--dry-run") > 0
    assert RequestLog.objects.count() == logged
    assert replay_journals() > 0
    assert replay_journals() == 0
    assert not Hold.objects.exists()
    assert RequestLog.objects.filter(id__in=answered).count() == len(answered)
    cost = RequestLog.objects.aggregate(s=Sum("cost"))["s"]
    assert balance_of(alice) == ledger_sum(alice) == 100_000_000 - cost
    # And on the dashboards: the command folds what the dead process left pending.
    assert not UsagePending.objects.exists()
    assert UsageMinute.objects.aggregate(s=Sum("cost"))["s"] == cost


def test_two_gateways_holding_parts_of_a_balance_serve_every_request_it_covers(
    served, gateways, upstream
):
    # Each answer costs exactly what is held for it: (8 + 5 × 4) × 3.75 × 2 = 210 µ$. A quarter
    # of a balance, a process's first lease, is 12.5 answers: the leases split answers, and
    # the last answers' money ends up in pieces in both processes.
    services.price_change(
        target=ModelPrice.objects.get(model="gpt-4o-mini"),
        new_values={"model_multiplier": Decimal("3.75")},
        reason="Each answer costs 210 µ$.",
        staff_user=None,
    )
    upstream.behaviour["usage"] = {"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13}
    covered = 50
    users = [served, *(make_user(f"user{n}@example.com") for n in range(7))]
    keys = []
    for user in users:
        services.balance_credit(user=user, amount=covered * 210, kind=LedgerEntry.Kind.ADJUSTMENT)
        keys.append(token_create(user=user, name="load", line=_line(), notify=False)[1])
    pair = [gateways("a"), gateways("b")]
    answered, outcomes = load(
        [g.url for g in pair],
        keys,
        clients=len(users) * 10,
        until=lambda: False,
        stop_after_refusals=3,
        streams=False,
    )
    assert set(outcomes) == {"ok", "insufficient_quota"}
    wait_until(
        lambda: all(balance_of(user) == 0 for user in users), timeout=20, message="all settled"
    )
    for user in users:
        assert RequestLog.objects.filter(user=user, status=200).count() == covered, user
        assert ledger_sum(user) == 0
    assert len(answered) == covered * len(users)


def replay_journals(*options):
    out = io.StringIO()
    call_command("replay_journals", *options, stdout=out)
    return int(out.getvalue().split()[0])


def _line():
    from billing.models import Line

    return Line.objects.get(name="default")
