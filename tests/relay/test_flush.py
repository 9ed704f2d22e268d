"""One account the database refuses does not hold back the others: their log rows and money
land in the same flushes; its own usage is set aside, shown to staff, retried, and lands once
the database takes it again. Nothing is dropped."""

import asyncio
import threading

import aiohttp
import pytest
from django.db.models import Sum
from django.urls import reverse

from billing import services
from billing.models import Account, Hold, LedgerEntry, UnsettledUsage
from logs.models import RequestLog
from tests.conftest import balance_and_ledger, balance_of, ledger_sum, make_user
from tests.relay.conftest import make_channel, wait_until
from tokens.services import token_create

pytestmark = pytest.mark.postgres


def traffic(base_url, keys, stop):
    """One client per key, one request after another, until `stop`; statuses per key."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
    statuses = {key: [] for key in keys}

    async def client(session, key):
        headers = {"Authorization": f"Bearer {key}"}
        while not stop.is_set():
            async with session.post(
                f"{base_url}/v1/chat/completions", json=body, headers=headers
            ) as response:
                await response.read()
                statuses[key].append(response.status)

    async def main():
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(client(session, key) for key in keys for _ in range(5)))

    asyncio.run(main())
    return statuses


def logged(user):
    return RequestLog.objects.filter(user=user).count()


def test_an_account_the_database_refuses_holds_back_no_one_else(
    live_site, upstream, prices, default_line, staff_client, caplog, refusals
):
    make_channel(upstream)
    users = [make_user(f"user{n}@example.com") for n in range(4)]
    refused = users[0]
    keys = []
    for user in users:
        services.balance_credit(user=user, amount=10_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
        keys.append(token_create(user=user, name="load", line=default_line, notify=False)[1])
    stop = threading.Event()
    statuses = {}
    worker = threading.Thread(target=lambda: statuses.update(traffic(live_site.url, keys, stop)))
    worker.start()
    try:
        wait_until(lambda: all(logged(u) for u in users), message="traffic for everyone")
        refusals.rows_of(refused)
        before = {u.pk: logged(u) for u in users}
        # The others go on being logged and charged, flush after flush (a flush that splits
        # the refused account's rows takes a while: they are waited for, not timed).
        for user in users[1:]:
            wait_until(
                lambda user=user: logged(user) > before[user.pk] + 20,
                timeout=20,
                message=f"{user.email}'s rows while another account is refused",
            )
            balance, ledger = balance_and_ledger(user)
            assert balance == ledger
        assert logged(refused) == before[refused.pk]
        waiting = wait_until(
            lambda: UnsettledUsage.objects.filter(user=refused, settled_at__isnull=True).first(),
            message="the refused usage shown to staff",
        )
        assert waiting.requests > 0 and "refused for the test" in waiting.error
        page = staff_client.get(reverse("admin:billing_unsettledusage_changelist")).content
        assert refused.email.encode() in page and b"refused for the test" in page
        refusals.none()
        wait_until(
            lambda: UnsettledUsage.objects.filter(settled_at__isnull=False).exists(),
            timeout=15,
            message="the set-aside usage retried",
        )
    finally:
        stop.set()
        worker.join(60)
    live_site.stop()  # the last flush

    for user, key in zip(users, keys, strict=True):
        answered = statuses[key].count(200)
        assert logged(user) == answered == len(statuses[key])
        cost = RequestLog.objects.filter(user=user).aggregate(s=Sum("cost"))["s"]
        assert balance_of(user) == ledger_sum(user) == 10_000_000 - cost
        assert Account.objects.get(user=user).held == 0
    assert not Hold.objects.exists()
    assert "Set aside" in caplog.text and f"of user {refused.pk}" in caplog.text
    assert "Gateway flush failed" not in caplog.text
