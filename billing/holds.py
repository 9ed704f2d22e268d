"""Money on the gateway's hot path: leases held in the database, spent in memory.

A gateway process takes a hold on a user's available balance (and on a limited token's quota)
with one guarded update: `held = held + L WHERE balance - held >= L`. Requests then reserve and
spend from that lease in memory, with no database round trip. A lease is sized to the funds:
large for a rich account, down to a single request's estimate when money is short, so that no
request is ever served without money held for it and a balance never goes below zero. When a
process comes up short while other processes hold money of the same account, it asks them to
give back what they do not use (`ask_others`), and tries once more.

What a request costs is written in its log row. Once a second the log writer settles, per
account, what the newly written rows cost (`usage_settle`): the balance and the hold go down
by it, one usage ledger row records it, and lease money the process gives back is released,
all in the transaction that writes those rows. So a request is charged exactly when its log
row is written, and never twice: a row that already exists was charged when it was written.

Hold rows name their owner process and expire unless the owner keeps touching them. What a
dead process left is settled from its journal by the next gateway process (relay.journal),
which then releases the rest; `holds_reap`, a periodic job, releases holds nobody settles.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from billing.alerts import low_balance_check
from billing.models import Account, Hold, LedgerEntry, UnsettledUsage

log = logging.getLogger(__name__)

# A lease nobody has used for this long is given back at the next settlement.
IDLE_RELEASE_SECONDS = 5.0
# After the database said the money is gone (and no other process holds any), requests wanting
# more than the lease has are refused for this long without asking again, unless a credit or a
# token change says otherwise.
SHORT_SECONDS = 1.0


class Refused(Exception):
    """A request the money does not cover. `code` is "insufficient_quota" (the balance) or
    "token_quota_exceeded" (the token's own limit)."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


@dataclass
class Lease:
    user_id: int = 0
    held: int = 0  # micro-dollars held in the database for this process
    reserved: int = 0  # estimates of requests in flight
    spent: int = 0  # charged, not yet settled
    short_until: float = 0.0  # the database said "not enough" until then
    last_active: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def free(self):
        return self.held - self.reserved - self.spent


@dataclass
class Settlement:
    """The lease money one flush gives back: per user, and per limited token (user, amount)."""

    accounts: dict = field(default_factory=dict)
    quotas: dict = field(default_factory=dict)

    def __bool__(self):
        return bool(self.accounts or self.quotas)


class HoldBook:
    """The leases of one gateway process. Used from its event loop only.

    `run_db(function, **kwargs)` awaits a database function in a thread; `ask_others(user_id,
    token_id, owners)`, when given, asks those processes to give back idle lease money of that
    account (or token quota) and returns once they answered or a short time passed.
    """

    def __init__(self, owner, run_db, ask_others=None):
        self.owner = owner
        self.run_db = run_db
        self.ask_others = ask_others
        self.accounts = {}
        self.quotas = {}

    async def reserve(self, *, user_id, token_id, limited, amount):
        """Holds `amount` for one request on the account and, if limited, the token quota."""
        account = await self._reserve(self.accounts, user_id, None, user_id, amount)
        if account is None:
            raise Refused("insufficient_quota")
        if limited:
            try:
                quota = await self._reserve(self.quotas, token_id, token_id, user_id, amount)
            except BaseException:  # the database failed, or the request was cancelled
                account.reserved -= amount
                raise
            if quota is None:
                account.reserved -= amount
                raise Refused("token_quota_exceeded")

    async def _reserve(self, leases, key, token_id, user_id, amount):
        lease = leases.get(key)
        if lease is None:
            lease = leases[key] = Lease(user_id=user_id)
        now = time.monotonic()
        lease.last_active = now
        if lease.free < amount:
            if lease.short_until > now:
                return None
            async with lease.lock:  # one database top-up at a time per lease
                if lease.free < amount and not await self._top_up(lease, user_id, token_id, amount):
                    return None
        lease.reserved += amount
        return lease

    async def _top_up(self, lease, user_id, token_id, amount):
        """Asks the database for more money; asks other processes to give some back if it is
        short while they hold some. True when the lease now covers `amount`."""
        if lease.short_until > time.monotonic():
            return False
        for attempt in range(2):
            granted, others = await self.run_db(
                hold_acquire,
                owner=self.owner,
                user_id=user_id,
                token_id=token_id,
                minimum=amount - max(lease.free, 0),
            )
            lease.held += granted
            if lease.free >= amount:
                return True
            if not others or self.ask_others is None or attempt:
                break
            await self.ask_others(user_id, token_id, others)
        if not others:  # really gone: do not ask the database again for a while
            lease.short_until = time.monotonic() + SHORT_SECONDS
        return False

    def funds_changed(self, user_ids):
        """A credit, or a token's limit, changed for these users: ask the database again."""
        users = set(user_ids)
        for lease in [*self.accounts.values(), *self.quotas.values()]:
            if lease.user_id in users:
                lease.short_until = 0.0

    def finish(self, *, user_id, token_id, limited, reserved, cost):
        """Ends a request that reserved `reserved`: charges its cost from the leases.

        The real cost may exceed the estimate; the excess comes from the lease if it has it.
        Returns what was charged, which is less than `cost` only when even that was missing.
        """
        account = self.accounts[user_id]
        account.reserved -= reserved  # what was reserved is free again, to be charged from
        charge = min(cost, max(account.free, 0))
        if limited:
            quota = self.quotas[token_id]
            quota.reserved -= reserved
            charge = min(charge, max(quota.free, 0))
            quota.spent += charge
            quota.last_active = time.monotonic()
        account.spent += charge
        account.last_active = time.monotonic()
        return charge

    def take_settlement(self):
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

    def give_back(self, user_id, token_id):
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

    def undo_give_back(self, user_id, token_id, amount):
        """The database did not release what `give_back` took out: it is the lease's again."""
        lease = self.quotas.get(token_id) if token_id else self.accounts.get(user_id)
        if lease is not None:
            lease.held += amount

    def forget(self, *, users=(), tokens=()):
        """These leases' holds were released behind this process's back (it could not reach the
        database for longer than HOLD_SECONDS): their free money is gone. What requests in
        flight reserved, and what was spent since, stays theirs, to be settled from whatever
        the account has; the next request asks the database afresh."""
        leases = [self.accounts.get(u) for u in users] + [self.quotas.get(t) for t in tokens]
        for lease in leases:
            if lease is not None:
                lease.held = min(lease.held, lease.reserved + lease.spent)

    def release_everything(self):
        """A settlement that gives back every lease, for shutdown."""
        for lease in [*self.accounts.values(), *self.quotas.values()]:
            lease.last_active = 0
        return self.take_settlement()


# Database side. These run in the gateway's database threads, or in Celery.


def _expiry():
    return timezone.now() + timedelta(seconds=settings.HOLD_SECONDS)


def _target(user_id, token_id):
    if token_id is None:
        return {"user_id": user_id, "token__isnull": True}
    return {"token_id": token_id}


def hold_acquire(*, owner, user_id, token_id, minimum):
    """Holds more money for `owner`: at least `minimum`, more when funds allow.

    Returns (amount held, other owners): the amount is 0 when the available balance (or token
    quota) is below `minimum`; the other owners are named only then, and only if what they
    hold would make up the difference.
    """
    from tokens.models import Token

    with transaction.atomic():
        if token_id is None:
            rows = Account.objects.filter(user_id=user_id)
            found = rows.values_list("balance", "held").first()
            available = found[0] - found[1] if found else 0
        else:
            rows = Token.objects.filter(pk=token_id, unlimited_quota=False)
            found = rows.values_list("quota_limit", "quota_used", "quota_held").first()
            available = found[0] - found[1] - found[2] if found else 0
        if available >= minimum:
            for amount in dict.fromkeys((_lease_size(available, minimum), minimum)):
                if _take(rows, token_id, amount):
                    _add_to_hold(owner, user_id, token_id, amount)
                    return amount, ()
        others = dict(
            Hold.objects.filter(amount__gt=0, **_target(user_id, token_id))
            .exclude(owner=owner)
            .values_list("owner", "amount")
        )
        if max(available, 0) + sum(others.values()) < minimum:
            return 0, ()
        return 0, tuple(sorted(others))


def _take(rows, token_id, amount):
    """The guarded update: only if the funds still cover `amount`."""
    if token_id is None:
        return rows.filter(balance__gte=F("held") + amount).update(held=F("held") + amount)
    return rows.filter(quota_limit__gte=F("quota_used") + F("quota_held") + amount).update(
        quota_held=F("quota_held") + amount
    )


def _lease_size(available, minimum):
    # A quarter of what is available, within limits: several processes can each hold some.
    return max(minimum, min(available // 4, settings.LEASE_MAX))


def _add_to_hold(owner, user_id, token_id, amount):
    holds = Hold.objects.filter(owner=owner, **_target(user_id, token_id))
    if not holds.update(amount=F("amount") + amount, expires_at=_expiry()):
        Hold.objects.create(
            owner=owner, user_id=user_id, token_id=token_id, amount=amount, expires_at=_expiry()
        )


def _lock_account(user_id):
    """Locks an account row (first, always: then its tokens, then holds) and reads it."""
    return (
        Account.objects.select_for_update(no_key=True)
        .filter(user_id=user_id)
        .values_list("balance", "held")
        .first()
    )


def _lock_tokens(token_ids):
    """Locks token rows in id order (after their account's row)."""
    from tokens.models import Token

    rows = Token.objects.select_for_update(no_key=True).filter(pk__in=list(token_ids))
    return list(rows.order_by("pk").values_list("pk", flat=True))


def _lock_hold(owner, user_id, token_id):
    return (
        Hold.objects.select_for_update()
        .filter(owner=owner, **_target(user_id, token_id))
        .values_list("pk", "amount")
        .first()
    )


def _hold_down(hold_pk, amount):
    if amount:
        Hold.objects.filter(pk=hold_pk).update(amount=F("amount") - amount)


def hold_give_back(*, owner, user_id, token_id, amount):
    """Releases up to `amount` of `owner`'s hold on an account (or a token quota), because
    another process asked for it. Returns what was released."""
    from tokens.models import Token

    with transaction.atomic():
        if _lock_account(user_id) is None:
            return 0
        if token_id is not None:
            _lock_tokens([token_id])
        hold = _lock_hold(owner, user_id, token_id)
        released = min(amount, hold[1]) if hold else 0
        if released:
            _hold_down(hold[0], released)
            Hold.objects.filter(pk=hold[0], amount=0).delete()
            if token_id is None:
                Account.objects.filter(user_id=user_id).update(held=F("held") - released)
            else:
                Token.objects.filter(pk=token_id).update(quota_held=F("quota_held") - released)
        return released


@dataclass
class Usage:
    """One account's part of a flush, as money: what its newly written log rows cost, and the
    lease money its process gives back."""

    user_id: int
    cost: int = 0
    requests: int = 0  # rows that cost something
    tokens: dict = field(default_factory=dict)  # token id → [spent, spent from its quota lease]
    release: int = 0
    quota_releases: dict = field(default_factory=dict)  # token id → amount given back

    def add_request(self, token_id, cost, *, quota):
        if not cost:
            return
        self.cost += cost
        self.requests += 1
        if token_id:
            spent = self.tokens.setdefault(token_id, [0, 0])
            spent[0] += cost
            spent[1] += cost if quota else 0


def usage_settle(*, owner, usage, release_all=False):
    """Charges one account's usage from `owner`'s holds and releases what it gives back (all of
    its holds on the account with `release_all`: the owner is gone). Runs in the caller's
    transaction, which also writes the log rows that cost this money.

    Returns (lost account hold, [token ids whose quota hold was lost]): holds the reaper
    released while the owner still spent from them. Their usage is charged from the available
    balance instead, never below it; a shortfall is logged as an error.
    """
    from tokens.models import Token

    user_id = usage.user_id
    account = _lock_account(user_id)
    token_ids = set(usage.tokens) | set(usage.quota_releases)
    if release_all:
        token_ids.update(
            Hold.objects.filter(owner=owner, user_id=user_id, token__isnull=False).values_list(
                "token_id", flat=True
            )
        )
    token_ids = sorted(token_ids)
    _lock_tokens(token_ids)
    if account is None:  # the user was deleted: nothing to charge or release
        return False, []
    balance, held = account
    hold = _lock_hold(owner, user_id, None)
    in_hold = hold[1] if hold else 0
    from_hold = min(in_hold, usage.cost)
    from_free = min(usage.cost - from_hold, max(balance - held, 0))
    released = in_hold - from_hold if release_all else min(in_hold - from_hold, usage.release)
    if hold:
        _hold_down(hold[0], from_hold + released)
    charged = from_hold + from_free
    if charged or released:
        Account.objects.filter(user_id=user_id).update(
            balance=F("balance") - charged, held=F("held") - from_hold - released
        )
    if charged:
        LedgerEntry.objects.create(
            account_id=user_id,
            kind=LedgerEntry.Kind.USAGE,
            amount=-charged,
            balance_after=balance - charged,
            request_count=usage.requests,
        )
        low_balance_check([user_id])
    if charged < usage.cost:
        log.error(
            "User %s: %s micro-dollars of usage could not be charged: the hold was gone and the "
            "balance did not cover it",
            user_id,
            usage.cost - charged,
        )
    lost_tokens = []
    for token_id in token_ids:
        spent, from_quota = usage.tokens.get(token_id, (0, 0))
        release = usage.quota_releases.get(token_id, 0)
        quota_hold = _lock_hold(owner, user_id, token_id)
        in_quota = quota_hold[1] if quota_hold else 0
        taken = min(in_quota, from_quota)
        given = in_quota - taken if release_all else min(in_quota - taken, release)
        if quota_hold:
            _hold_down(quota_hold[0], taken + given)
        elif from_quota or release:
            lost_tokens.append(token_id)
        if spent or taken or given:
            Token.objects.filter(pk=token_id).update(
                quota_used=F("quota_used") + spent, quota_held=F("quota_held") - taken - given
            )
    Hold.objects.filter(owner=owner, user_id=user_id, amount=0).delete()
    lost_account = hold is None and bool(usage.cost or usage.release)
    return lost_account, lost_tokens


def holds_refresh(*, owner):
    """The owner is alive: its holds do not expire yet."""
    Hold.objects.filter(owner=owner).update(expires_at=_expiry())


def holds_of(owner):
    """The users on whose accounts `owner` holds money."""
    return set(Hold.objects.filter(owner=owner).values_list("user_id", flat=True))


def holds_reap(*, now=None):
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


def _reap(hold_id, user_id, token_id, now):
    from tokens.models import Token

    with transaction.atomic():
        _lock_account(user_id)  # the same order as every settlement: account, token, hold
        if token_id is not None:
            _lock_tokens([token_id])
        hold = (
            Hold.objects.select_for_update(skip_locked=True)
            .filter(pk=hold_id, expires_at__lt=now)
            .values_list("amount", flat=True)
            .first()
        )
        if hold is None:
            return 0
        if token_id is not None:
            Token.objects.filter(pk=token_id).update(quota_held=F("quota_held") - hold)
        else:
            Account.objects.filter(user_id=user_id).update(held=F("held") - hold)
        Hold.objects.filter(pk=hold_id).delete()
        return 1


def unsettled_record(*, owner, user_id, requests, amount, error):
    """Shows staff that an account's usage was refused and is kept for another try."""
    now = timezone.now()
    with transaction.atomic():
        updated = UnsettledUsage.objects.filter(
            owner=owner, user_id=user_id, settled_at__isnull=True
        ).update(
            requests=requests,
            amount=amount,
            error=error[:500],
            attempts=F("attempts") + 1,
            last_refused_at=now,
        )
        if not updated:
            UnsettledUsage.objects.create(
                owner=owner, user_id=user_id, requests=requests, amount=amount, error=error[:500]
            )


def unsettled_cleared(*, owner, user_ids):
    """These accounts' refused usage went through at last."""
    UnsettledUsage.objects.filter(
        owner=owner, user_id__in=list(user_ids), settled_at__isnull=True
    ).update(settled_at=timezone.now())
