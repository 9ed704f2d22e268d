"""Many clients at once against little money: never overspent, never below zero."""

import asyncio

import aiohttp
import pytest

from billing import services
from billing.models import Account, LedgerEntry
from logs.models import RequestLog
from tests.conftest import balance_of, ledger_sum
from tests.relay.conftest import wait_until
from tokens.models import Token
from tokens.services import token_create

pytestmark = pytest.mark.postgres

CLIENTS = 50
REQUESTS_EACH = 100
# The fake upstream's answer costs (12 + 5 × 4) × 0.075 × 2 = 4.8 → 5 micro-dollars, and with
# max_tokens=5 the estimate held is (9 + 5 × 4) × 0.15 = 4.35, rounded up to 5: the cost.
COST = 5


def hammer(base_url, key):
    """CLIENTS concurrent clients, REQUESTS_EACH requests each; returns each outcome.

    A bare HTTP client, not the openai package: 5,000 requests through the heavier client would
    spend most of the test's time in the client, in this same process.
    """
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    headers = {"Authorization": f"Bearer {key}"}

    async def client_loop(session, outcomes):
        for _ in range(REQUESTS_EACH):
            async with session.post(
                f"{base_url}/chat/completions", json=body, headers=headers
            ) as r:
                answer = await r.json()
                outcomes.append("ok" if r.status == 200 else answer["error"]["code"])

    async def main():
        outcomes = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            await asyncio.gather(*(client_loop(session, outcomes) for _ in range(CLIENTS)))
        return outcomes

    return asyncio.run(main())


def test_a_balance_for_a_thousand_requests_pays_for_no_more(
    live_site, alice, channel, default_line
):
    services.balance_credit(user=alice, amount=1_000 * COST, kind=LedgerEntry.Kind.ADJUSTMENT)
    _token, key = token_create(user=alice, name="load", line=default_line, notify=False)
    outcomes = hammer(f"{live_site.url}/v1", key)
    served = outcomes.count("ok")
    refused = outcomes.count("insufficient_quota")
    assert served + refused == CLIENTS * REQUESTS_EACH
    assert served <= 1_000
    assert served >= 990, "money held by idle leases should not refuse much"
    wait_until(lambda: RequestLog.objects.filter(status=200).count() == served, timeout=20)
    wait_until(lambda: balance_of(alice) == 1_000 * COST - served * COST, timeout=20)
    assert balance_of(alice) >= 0
    assert ledger_sum(alice) == balance_of(alice)
    assert set(RequestLog.objects.filter(status=200).values_list("cost", flat=True)) == {COST}
    assert Account.objects.get(user=alice).held >= 0


def test_a_token_quota_for_a_thousand_requests_pays_for_no_more(
    live_site, alice, channel, default_line
):
    services.balance_credit(user=alice, amount=1_000_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    token, key = token_create(
        user=alice,
        name="limited",
        line=default_line,
        unlimited_quota=False,
        quota_limit=1_000 * COST,
        notify=False,
    )
    outcomes = hammer(f"{live_site.url}/v1", key)
    served = outcomes.count("ok")
    assert served + outcomes.count("token_quota_exceeded") == CLIENTS * REQUESTS_EACH
    assert 990 <= served <= 1_000
    wait_until(lambda: Token.objects.get(pk=token.pk).quota_used == served * COST, timeout=20)
    token.refresh_from_db()
    assert token.quota_used <= token.quota_limit
    assert ledger_sum(alice) == balance_of(alice) == 1_000_000_000 - served * COST
