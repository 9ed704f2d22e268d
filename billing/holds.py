"""Money on the gateway's hot path: leases held in the database, spent in memory.

A gateway process takes a hold on a user's available balance (and on a limited token's quota)
with one guarded update: `held = held + L WHERE balance - held >= L`. Requests then reserve and
spend from that lease in memory, with no database round trip. A lease is sized to the funds:
large for a rich account, down to a single request's estimate when money is short, so that no
request is ever served without money held for it and a balance never goes below zero. When a
process comes up short while other processes hold money of the same account, it asks them to
give back what they do not use (`ask_others`), and tries once more.

What a request costs is written in its log row. Once a second the log writer settles, per
account, what the newly written rows cost (billing.settlement.usages_settle): the balance and
the hold go down by it, one usage ledger row records it, and lease money the process gives
back is released, all in the transaction that writes those rows. So a request is charged
exactly when its log row is written, and never twice: a row that already exists was charged
when it was written.

Hold rows name their owner process and expire unless the owner keeps touching them. What a
dead process left is settled from its journal by the next gateway process (relay.journal),
which then releases the rest; `holds_reap`, a periodic job, releases holds nobody settles.

Account.held and a limited token's quota_held (through billing.models.TokenQuota) change only
by the guarded F() updates here, and by billing.ledger's postings (`ledger_post`, and
`usage_post` for a flush) when a settlement or a refund debits what was held.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, TypeVar

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Count, F, Model, Q, Sum
from django.utils import timezone

from billing.ledger import by_row, funds_lock, in_statements
from billing.models import Account, Hold, TokenQuota

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# A lease nobody has used for this long is given back at the next settlement.
IDLE_RELEASE_SECONDS = 5.0
# After the database said the money is gone (and no other process holds any), requests wanting
# more than the lease has are refused for this long without asking again, unless a credit or a
# token change says otherwise.
SHORT_SECONDS = 1.0


class Refused(Exception):
    """A request the money does not cover. `code` is "insufficient_quota" (the balance) or
    "token_quota_exceeded" (the token's own limit); `available` what the request could have
    had of it, `held` what other requests in flight hold of it (free again once they end)."""

    def __init__(self, code: str, *, available: int = 0, held: int = 0) -> None:
        super().__init__(code)
        self.code = code
        self.available = available
        self.held = held


@dataclass
class Lease:
    user_id: int = 0
    held: int = 0  # micro-dollars held in the database for this process
    reserved: int = 0  # estimates of requests in flight
    spent: int = 0  # charged, not yet settled
    short_until: float = 0.0  # the database said "not enough" until then
    # What the database had left, and what other processes held, when last asked.
    outside: int = 0
    elsewhere: int = 0
    last_active: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def free(self) -> int:
        return self.held - self.reserved - self.spent


def _short(lease: Lease, amount: int) -> bool:
    """Whether the database said a moment ago that it has less than what `amount` lacks (the
    least a request can be served with: one that can be fitted to what is left still asks)."""
    return lease.short_until > time.monotonic() and amount - lease.free > lease.outside


@dataclass
class Settlement:
    """The lease money one flush gives back: per user, and per limited token (user, amount)."""

    accounts: dict[int, int] = field(default_factory=dict)
    quotas: dict[int, tuple[int, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.accounts or self.quotas)


class RunDb(Protocol):
    """Awaits a database function, called with keyword arguments, in a thread."""

    def __call__(self, function: Callable[..., _T], /, **kwargs: Any) -> Awaitable[_T]: ...


# Asks other processes (owners) to give back idle lease money of an account or token quota.
AskOthers = Callable[[int, int | None, tuple[str, ...]], Awaitable[object]]


class HoldBook:
    """The leases of one gateway process. Used from its event loop only.

    `run_db(function, **kwargs)` awaits a database function in a thread; `ask_others(user_id,
    token_id, owners)`, when given, asks those processes to give back idle lease money of that
    account (or token quota) and returns once they answered or a short time passed.
    """

    def __init__(self, owner: str, run_db: RunDb, ask_others: AskOthers | None = None) -> None:
        self.owner = owner
        self.run_db = run_db
        self.ask_others = ask_others
        self.accounts: dict[int, Lease] = {}  # by user id
        self.quotas: dict[int, Lease] = {}  # by token id

    async def reserve(
        self,
        *,
        user_id: int,
        token_id: int | None,
        limited: bool,
        amount: int,
        least: int | None = None,
    ) -> int:
        """Holds `amount` for one request on the account and, if limited, the token quota; or,
        given `least`, as much of `amount` as the funds cover, if that is `least` or more.
        Returns what it held; raises Refused when even `least` is not there."""
        least = amount if least is None else min(least, amount)
        account, taken = await self._reserve(
            self.accounts, user_id, None, user_id, amount, least, "insufficient_quota"
        )
        if limited and token_id is not None:
            try:
                _quota, quota_taken = await self._reserve(
                    self.quotas, token_id, token_id, user_id, taken, least, "token_quota_exceeded"
                )
            except BaseException:  # refused, the database failed, or the request was cancelled
                account.reserved -= taken
                raise
            account.reserved -= taken - quota_taken
            taken = quota_taken
        return taken

    async def _reserve(
        self,
        leases: dict[int, Lease],
        key: int,
        token_id: int | None,
        user_id: int,
        amount: int,
        least: int,
        code: str,
    ) -> tuple[Lease, int]:
        lease = leases.get(key)
        if lease is None:
            lease = leases[key] = Lease(user_id=user_id)
        lease.last_active = time.monotonic()
        if lease.free < amount and not _short(lease, least):
            async with lease.lock:  # one database top-up at a time per lease
                if lease.free < amount and not _short(lease, least):
                    await self._top_up(lease, user_id, token_id, amount, least)
        if lease.free < least:
            held = lease.elsewhere + lease.reserved
            raise Refused(code, available=max(lease.free, 0) + lease.outside, held=held)
        taken = min(amount, lease.free)
        lease.reserved += taken
        return lease, taken

    async def _top_up(
        self, lease: Lease, user_id: int, token_id: int | None, amount: int, least: int
    ) -> None:
        """Asks the database for more money, to cover `amount` or at least `least`; asks other
        processes to give some back if it is short while they hold some."""
        for attempt in range(2):
            free = max(lease.free, 0)
            acquired = await self.run_db(
                hold_acquire,
                owner=self.owner,
                user_id=user_id,
                token_id=token_id,
                minimum=max(least - free, 0),
                wanted=amount - free,
            )
            lease.held += acquired.granted
            lease.outside, lease.elsewhere = acquired.left, acquired.held_elsewhere
            if lease.free >= amount:
                return
            if not acquired.others or self.ask_others is None or attempt:
                break
            await self.ask_others(user_id, token_id, acquired.others)
        if not acquired.others:  # really gone: do not ask the database again for a while
            lease.short_until = time.monotonic() + SHORT_SECONDS

    def funds_changed(self, user_ids: Iterable[int]) -> None:
        """A credit, or a token's limit, changed for these users: ask the database again."""
        users = set(user_ids)
        for lease in [*self.accounts.values(), *self.quotas.values()]:
            if lease.user_id in users:
                lease.short_until = 0.0

    def finish(
        self, *, user_id: int, token_id: int | None, limited: bool, reserved: int, cost: int
    ) -> int:
        """Ends a request that reserved `reserved`: charges its cost from the leases.

        The real cost may exceed the estimate; the excess comes from the lease if it has it.
        Returns what was charged, which is less than `cost` only when even that was missing.
        """
        account = self.accounts[user_id]
        account.reserved -= reserved  # what was reserved is free again, to be charged from
        charge = min(cost, max(account.free, 0))
        if limited and token_id is not None:
            quota = self.quotas[token_id]
            quota.reserved -= reserved
            charge = min(charge, max(quota.free, 0))
            quota.spent += charge
            quota.last_active = time.monotonic()
        account.spent += charge
        account.last_active = time.monotonic()
        return charge

    def take_settlement(self) -> Settlement:
        """Takes what was spent out of the leases (the log rows carry it to the database), and
        the money of idle leases, to be given back by this flush."""
        settlement = Settlement()
        now = time.monotonic()
        for leases in (self.accounts, self.quotas):
            for key, lease in list(leases.items()):
                idle = lease.reserved == 0 and now - lease.last_active > IDLE_RELEASE_SECONDS
                release = max(lease.free, 0) if idle else 0
                lease.held -= lease.spent + release
                lease.spent = 0
                if release and leases is self.accounts:
                    settlement.accounts[key] = release
                elif release:
                    settlement.quotas[key] = (lease.user_id, release)
                if idle and lease.held == 0 and not lease.lock.locked():
                    del leases[key]
        return settlement

    def give_back(self, user_id: int, token_id: int | None) -> int:
        """Takes the free money out of one lease, for another process that asked for it; the
        caller releases it in the database (`hold_give_back`). Returns the amount. A process
        short of money itself gives back all the same: two processes each holding half of
        what a request needs must both let go for either to serve it."""
        lease = self.quotas.get(token_id) if token_id else self.accounts.get(user_id)
        if lease is None or lease.free <= 0:
            return 0
        amount = lease.free
        lease.held -= amount
        return amount

    def undo_give_back(self, user_id: int, token_id: int | None, amount: int) -> None:
        """The database did not release what `give_back` took out: it is the lease's again."""
        lease = self.quotas.get(token_id) if token_id else self.accounts.get(user_id)
        if lease is not None:
            lease.held += amount

    def forget(self, *, users: Iterable[int] = (), tokens: Iterable[int] = ()) -> None:
        """These leases' holds were released behind this process's back (it could not reach the
        database for longer than HOLD_SECONDS): their free money is gone. What requests in
        flight reserved, and what was spent since, stays theirs, to be settled from whatever
        the account has; the next request asks the database afresh."""
        leases = [self.accounts.get(u) for u in users] + [self.quotas.get(t) for t in tokens]
        for lease in leases:
            if lease is not None:
                lease.held = min(lease.held, lease.reserved + lease.spent)

    def release_everything(self) -> Settlement:
        """A settlement that gives back every lease, for shutdown."""
        for lease in [*self.accounts.values(), *self.quotas.values()]:
            lease.last_active = 0
        return self.take_settlement()


# Database side. These run in the gateway's database threads, or in Celery. Rows are locked in
# one order everywhere: the account row (billing.ledger.funds_lock), then token rows by id,
# then hold rows.


class HoldRow(NamedTuple):
    pk: int
    amount: int


def _expiry() -> datetime:
    return timezone.now() + timedelta(seconds=settings.HOLD_SECONDS)


def _target(user_id: int, token_id: int | None) -> dict[str, Any]:
    if token_id is None:
        return {"user_id": user_id, "token__isnull": True}
    return {"token_id": token_id}


class Acquired(NamedTuple):
    """What hold_acquire held, and what it saw: what is left available after it, what other
    owners hold, and those of them to ask to give back."""

    granted: int
    others: tuple[str, ...] = ()
    left: int = 0
    held_elsewhere: int = 0


def hold_acquire(
    *, owner: str, user_id: int, token_id: int | None, minimum: int, wanted: int | None = None
) -> Acquired:
    """Holds more money for `owner`: at least `minimum` (and `wanted`, if given), more when
    funds allow; when they are short of `wanted`, all that is left if that is `minimum` or more.

    The amount is 0 when the available balance (or token quota) is below `minimum`; the other
    owners are named when what they hold would make up the difference (to `wanted`, when only
    part of it was held).
    """
    wanted = max(minimum, wanted or 0)
    with transaction.atomic():
        available = _available(user_id, token_id)
        if available >= wanted:
            for amount in dict.fromkeys((_lease_size(available, wanted), wanted)):
                if amount and held_take(user_id=user_id, token_id=token_id, amount=amount):
                    _add_to_hold(owner, user_id, token_id, amount)
                    return Acquired(amount, left=available - amount)
        granted = 0
        partly = minimum <= available < wanted and available > 0
        if partly and held_take(user_id=user_id, token_id=token_id, amount=available):
            _add_to_hold(owner, user_id, token_id, available)
            granted = available
        others = _held_by_others(owner, user_id, token_id)
        short = minimum if not granted else wanted
        ask = tuple(sorted(others)) if max(available, 0) + sum(others.values()) >= short else ()
        left = max(available - granted, 0)
        return Acquired(granted, ask, left, sum(others.values()))


def _available(user_id: int, token_id: int | None) -> int:
    """What the account (or the limited token's quota) has that nobody holds."""
    if token_id is None:
        funds = Account.objects.filter(user_id=user_id).values_list("balance", "held").first()
        return funds[0] - funds[1] if funds else 0
    quota = (
        TokenQuota.objects.filter(pk=token_id, unlimited_quota=False)
        .values_list("quota_limit", "quota_used", "quota_held")
        .first()
    )
    return (quota[0] or 0) - quota[1] - quota[2] if quota else 0


def _held_by_others(owner: str, user_id: int, token_id: int | None) -> dict[str, int]:
    """What the other processes hold of the account (or quota), by owner."""
    return dict(
        Hold.objects.filter(amount__gt=0, **_target(user_id, token_id))
        .exclude(owner=owner)
        .values_list("owner", "amount")
    )


def held_take(*, user_id: int, token_id: int | None, amount: int) -> bool:
    """Holds `amount` of an account's available balance (or of a limited token's quota), with
    the guarded update: only if the funds still cover it. True if held."""
    if token_id is None:
        rows = Account.objects.filter(user_id=user_id, balance__gte=F("held") + amount)
        return bool(rows.update(held=F("held") + amount))
    quotas = TokenQuota.objects.filter(
        pk=token_id,
        unlimited_quota=False,
        quota_limit__gte=F("quota_used") + F("quota_held") + amount,
    )
    return bool(quotas.update(quota_held=F("quota_held") + amount))


def held_release(*, user_id: int, token_id: int | None, amount: int) -> None:
    """Gives back `amount` held on an account (or on a token's quota)."""
    if token_id is None:
        Account.objects.filter(user_id=user_id).update(held=F("held") - amount)
    else:
        TokenQuota.objects.filter(pk=token_id).update(quota_held=F("quota_held") - amount)


def _lease_size(available: int, minimum: int) -> int:
    # A quarter of what is available, within limits: several processes can each hold some.
    return max(minimum, min(available // 4, settings.LEASE_MAX))


def _add_to_hold(owner: str, user_id: int, token_id: int | None, amount: int) -> None:
    holds = Hold.objects.filter(owner=owner, **_target(user_id, token_id))
    if not holds.update(amount=F("amount") + amount, expires_at=_expiry()):
        Hold.objects.create(
            owner=owner, user_id=user_id, token_id=token_id, amount=amount, expires_at=_expiry()
        )


def quotas_settle(spending: Mapping[int, tuple[int, int]]) -> None:
    """Tokens' spending is settled, token id → (spent, released): what their requests cost
    counts as used, and `released` of their quota holds is given back (spent from them, or
    released). One statement per POSTINGS_PER_STATEMENT tokens."""
    moving = [(token_id, moves) for token_id, moves in sorted(spending.items()) if any(moves)]
    for rows in in_statements(moving):
        chunk = dict(rows)
        TokenQuota.objects.filter(pk__in=list(chunk)).update(
            quota_used=F("quota_used") + by_row({t: spent for t, (spent, _) in chunk.items()}),
            quota_held=F("quota_held") - by_row({t: freed for t, (_, freed) in chunk.items()}),
        )


def held_release_all(amounts: Mapping[int, int]) -> None:
    """`held_release` of several accounts' holds, user id → amount, one statement per
    POSTINGS_PER_STATEMENT accounts."""
    _subtract(Account, "held", amounts)


def holds_lock_all(owner: str, user_ids: Iterable[int]) -> dict[tuple[int, int | None], HoldRow]:
    """Locks `owner`'s holds on these accounts and their tokens' quotas, in one statement;
    (user id, token id or None) → the hold."""
    rows = (
        Hold.objects.select_for_update()
        .filter(owner=owner, user_id__in=sorted(set(user_ids)))
        .order_by("pk")
        .values_list("user_id", "token_id", "pk", "amount")
    )
    return {(user_id, token_id): HoldRow(pk, amount) for user_id, token_id, pk, amount in rows}


def holds_down(amounts: Mapping[int, int]) -> None:
    """`hold_down` of several holds, hold id → amount, one statement per
    POSTINGS_PER_STATEMENT holds."""
    _subtract(Hold, "amount", amounts)


def _subtract(model: type[Model], column: str, amounts: Mapping[int, int]) -> None:
    moving = [(pk, amount) for pk, amount in sorted(amounts.items()) if amount]
    for rows in in_statements(moving):
        chunk = dict(rows)
        model._default_manager.filter(pk__in=list(chunk)).update(
            **{column: F(column) - by_row(chunk)}
        )


def quotas_lock(token_ids: Iterable[int]) -> None:
    """Locks token rows in id order (after their account's row)."""
    rows = TokenQuota.objects.select_for_update(no_key=True).filter(pk__in=list(token_ids))
    list(rows.order_by("pk").values_list("pk", flat=True))


def hold_lock(owner: str, user_id: int, token_id: int | None) -> HoldRow | None:
    """Locks `owner`'s hold on an account (or a token quota) and reads it."""
    row = (
        Hold.objects.select_for_update()
        .filter(owner=owner, **_target(user_id, token_id))
        .values_list("pk", "amount")
        .first()
    )
    return None if row is None else HoldRow(*row)


def hold_down(hold: HoldRow, amount: int) -> None:
    if amount:
        Hold.objects.filter(pk=hold.pk).update(amount=F("amount") - amount)


def hold_give_back(*, owner: str, user_id: int, token_id: int | None, amount: int) -> int:
    """Releases up to `amount` of `owner`'s hold on an account (or a token quota), because
    another process asked for it. Returns what was released."""
    with transaction.atomic():
        if funds_lock(user_id) is None:
            return 0
        if token_id is not None:
            quotas_lock([token_id])
        hold = hold_lock(owner, user_id, token_id)
        released = min(amount, hold.amount) if hold else 0
        if hold and released:
            hold_down(hold, released)
            Hold.objects.filter(pk=hold.pk, amount=0).delete()
            held_release(user_id=user_id, token_id=token_id, amount=released)
        return released


def holds_refresh(*, owner: str) -> None:
    """The owner is alive: its holds do not expire yet."""
    Hold.objects.filter(owner=owner).update(expires_at=_expiry())


def holds_of(owner: str) -> set[int]:
    """The users on whose accounts `owner` holds money."""
    return set(Hold.objects.filter(owner=owner).values_list("user_id", flat=True))


def money_held() -> dict[str, tuple[int, int]]:
    """What all gateway processes hold now, for the metrics: {"balance" or "token_quota":
    (holds, micro-dollars)}, in one query."""
    on_token = Q(token__isnull=False)
    totals = Hold.objects.aggregate(
        balance_holds=Count("pk", filter=~on_token),
        balance=Sum("amount", filter=~on_token, default=0),
        quota_holds=Count("pk", filter=on_token),
        quota=Sum("amount", filter=on_token, default=0),
    )
    return {
        "balance": (totals["balance_holds"], totals["balance"]),
        "token_quota": (totals["quota_holds"], totals["quota"]),
    }


def holds_reap(*, now: datetime | None = None) -> int:
    """Gives back the holds of processes that stopped touching them. Safe to run again; a hold
    it cannot release is logged and left, and the others are released all the same."""
    now = now or timezone.now()
    released = 0
    expired = Hold.objects.filter(expires_at__lt=now).values_list("pk", "user_id", "token_id")
    for hold_id, user_id, token_id in expired:
        try:
            released += _reap(hold_id, user_id, token_id, now)
        except DatabaseError:
            log.exception("Could not release expired hold %s of user %s", hold_id, user_id)
    return released


def _reap(hold_id: int, user_id: int, token_id: int | None, now: datetime) -> int:
    with transaction.atomic():
        funds_lock(user_id)  # the same order as every settlement: account, token, hold
        if token_id is not None:
            quotas_lock([token_id])
        amount = (
            Hold.objects.select_for_update(skip_locked=True)
            .filter(pk=hold_id, expires_at__lt=now)
            .values_list("amount", flat=True)
            .first()
        )
        if amount is None:
            return 0
        held_release(user_id=user_id, token_id=token_id, amount=amount)
        Hold.objects.filter(pk=hold_id).delete()
        return 1
