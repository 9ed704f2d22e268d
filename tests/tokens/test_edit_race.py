"""A token edited while it serves traffic: its owner in the console, staff in the admin. The
counters the gateway keeps (quota used and held, last use) must come out exact."""

import asyncio
import threading

import aiohttp
import pytest
from django.db.models import Sum
from django.urls import reverse

from billing import services
from billing.models import Account, Hold, LedgerEntry
from logs.models import RequestLog
from tests.conftest import balance_of, ledger_sum
from tests.relay.conftest import make_channel
from tokens.models import Token
from tokens.services import token_create

pytestmark = pytest.mark.postgres

CLIENTS = 50
EDITS = 100


def traffic(base_url, key, stop):
    """CLIENTS clients sending one request after another until `stop` is set; the statuses."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{base_url}/v1/chat/completions"
    statuses = []

    async def client(session):
        while not stop.is_set():
            async with session.post(url, json=body, headers=headers) as response:
                await response.read()
                statuses.append(response.status)

    async def main():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            await asyncio.gather(*(client(session) for _ in range(CLIENTS)))

    asyncio.run(main())
    return statuses


def test_edits_under_traffic_leave_the_counters_exact(
    live_site, alice, alice_client, staff_client, upstream, prices, default_line, settings
):
    settings.GATEWAY_FLUSH_SECONDS = 0.05  # many flushes between each form's read and save
    make_channel(upstream)
    services.balance_credit(user=alice, amount=100_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    token, key = token_create(
        user=alice,
        name="limited",
        line=default_line,
        unlimited_quota=False,
        quota_limit=50_000_000,
        notify=False,
    )
    stop = threading.Event()
    statuses = []
    worker = threading.Thread(
        target=lambda: statuses.extend(traffic(live_site.url, key, stop)), daemon=True
    )
    worker.start()
    admin_edits = 0
    for edits in range(1, EDITS + 1):
        limit = "50" if edits % 2 else "60"
        response = alice_client.post(
            reverse("tokens:edit", args=[token.pk]),
            {"name": f"limited {edits}", "quota_limit_usd": limit, "line": default_line.pk},
        )
        assert response.status_code == 302, response.content.decode()[:2000]
        if edits % 5 == 0:
            admin_edits += 1
            response = staff_client.post(
                reverse("admin:tokens_token_change", args=[token.pk]),
                {
                    "name": f"staff {admin_edits}",
                    "enabled": "on",
                    "quota_limit_usd": "55",
                    "expires_at_0": "",
                    "expires_at_1": "",
                },
            )
            assert response.status_code == 302, response.content.decode()[:3000]
    stop.set()
    worker.join(120)
    assert len(statuses) > 1_000 and set(statuses) == {200}
    live_site.stop()  # the last flush: every lease given back

    token.refresh_from_db()
    logged = RequestLog.objects.filter(token=token).aggregate(s=Sum("cost"))["s"]
    assert RequestLog.objects.filter(token=token, status=200).count() == len(statuses)
    assert token.quota_used == logged
    assert token.quota_held == 0
    assert Account.objects.get(user=alice).held == 0
    assert not Hold.objects.exists()
    assert balance_of(alice) == ledger_sum(alice) == 100_000_000 - logged
    assert Token.objects.get(pk=token.pk).name.startswith(("limited", "staff"))
