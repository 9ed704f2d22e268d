"""Gateway processes give each other back idle lease money, through Redis, so that money split
between them still pays for a request; and refuse at once when the money is really gone."""

import asyncio
import time

import pytest

from billing import services
from billing.holds import Refused
from billing.models import Account, Hold, LedgerEntry
from relay.gateway import Gateway

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def gateways_holding(alice, amounts, scenario):
    """Gateways of one machine, each holding one of `amounts` of alice's balance, unused;
    runs `scenario(*gateways)` with them and returns what it returns."""

    async def main():
        gateways = [Gateway() for _ in amounts]
        for gateway, amount in zip(gateways, amounts, strict=True):
            await gateway.start()
            await gateway.book.reserve(
                user_id=alice.pk, token_id=None, limited=False, amount=amount
            )
            gateway.book.finish(
                user_id=alice.pk, token_id=None, limited=False, reserved=amount, cost=0
            )
        try:
            return await scenario(*gateways)
        finally:
            for gateway in gateways:
                await gateway.stop()

    return asyncio.run(main())


def reserve(gateway, user, amount):
    return gateway.book.reserve(user_id=user.pk, token_id=None, limited=False, amount=amount)


@pytest.fixture
def two_requests_of_money(alice):
    services.balance_credit(user=alice, amount=210, kind=LedgerEntry.Kind.ADJUSTMENT)
    return alice


def test_a_request_whose_money_is_split_between_two_processes_is_served(two_requests_of_money):
    alice = two_requests_of_money

    async def scenario(first, second):
        # 105 held by each: neither covers a request of 210 on its own.
        await reserve(second, alice, 210)
        held = first.book.accounts[alice.pk].held, second.book.accounts[alice.pk].held
        second.book.finish(user_id=alice.pk, token_id=None, limited=False, reserved=210, cost=0)
        return held

    assert gateways_holding(alice, [105, 105], scenario) == (0, 210)
    assert Account.objects.get(user=alice).held == 0  # both gave back all at their stop
    assert not Hold.objects.exists()


def test_money_in_flight_elsewhere_is_refused_without_waiting(two_requests_of_money):
    alice = two_requests_of_money

    async def scenario(first, second):
        first.book.accounts[alice.pk].reserved = 105  # a request in flight there: not idle
        started = time.monotonic()
        with pytest.raises(Refused):
            await reserve(second, alice, 210)
        first.book.accounts[alice.pk].reserved = 0
        return time.monotonic() - started

    waited = gateways_holding(alice, [105, 105], scenario)
    assert waited < 0.25, "the other process answers at once, even with nothing to give"


def test_money_nobody_holds_is_refused_at_once(alice):
    services.balance_credit(user=alice, amount=105, kind=LedgerEntry.Kind.ADJUSTMENT)

    async def scenario(only):
        started = time.monotonic()
        with pytest.raises(Refused):
            await reserve(only, alice, 210)
        return time.monotonic() - started

    assert gateways_holding(alice, [105], scenario) < 0.05
