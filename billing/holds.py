"""Money on the gateway's hot path: leases held in the database, spent in memory.

A gateway process takes a hold on a user's available balance (and on a limited token's quota)
with one guarded update: `held = held + L WHERE balance - held >= L`. Requests then reserve and
spend from that lease in memory, with no database round trip. Once a second the log writer
settles what was spent: per account, one update (`balance -= used, held -= used + released`)
and one usage ledger row, in the same transaction as the log rows. A lease is sized to the
funds: large for a rich account, down to a single request's estimate when money is short, so
that no request is ever served without money held for it and a balance never goes below zero.

Hold rows name their owner process and expire unless the owner keeps touching them, so the
holds of a process that died are released by `holds_reap`, a periodic job.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing.alerts import low_balance_check
from billing.models import Account, Hold, LedgerEntry

log = logging.getLogger(__name__)

# A lease nobody has used for this long is given back at the next settlement.
IDLE_RELEASE_SECONDS = 5.0
# After the database said the money is short, requests wanting more than the lease has are
# refused for this long without asking again, unless a credit or a token change says otherwise.
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
    requests: int = 0  # requests charged, not yet settled
    short_until: float = 0.0  # the database said "not enough" until then
    last_active: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def free(self):
        return self.held - self.reserved - self.spent


@dataclass
class Settlement:
    """What one flush settles: per user and per limited token, (used, released, requests)."""

    accounts: dict = field(default_factory=dict)
    quotas: dict = field(default_factory=dict)
    token_spend: dict = field(default_factory=dict)  # every token's spend, limited or not

    def __bool__(self):
        return bool(self.accounts or self.quotas or self.token_spend)


class HoldBook:
    """The leases of one gateway process. Used from its event loop only."""

    def __init__(self, owner, run_db):
        self.owner = owner
        self.run_db = run_db  # awaits a function in the database thread
        self.accounts = {}
        self.quotas = {}
        self.token_spend = {}

    async def reserve(self, *, user_id, token_id, limited, amount):
        """Holds `amount` for one request on the account and, if limited, the token quota."""
        account = await self._reserve(self.accounts, user_id, None, user_id, amount)
        if account is None:
            raise Refused("insufficient_quota")
        if limited:
            quota = await self._reserve(self.quotas, token_id, token_id, user_id, amount)
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
                if lease.free < amount:
                    if lease.short_until > time.monotonic():
                        return None
                    granted = await self.run_db(
                        hold_acquire,
                        owner=self.owner,
                        user_id=user_id,
                        token_id=token_id,
                        minimum=amount - max(lease.free, 0),
                    )
                    lease.held += granted
                    if lease.free < amount:
                        lease.short_until = time.monotonic() + SHORT_SECONDS
                        return None
        lease.reserved += amount
        return lease

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
        quota = None
        if limited:
            quota = self.quotas[token_id]
            quota.reserved -= reserved
            charge = min(charge, max(quota.free, 0))
            quota.spent += charge
            quota.requests += 1
            quota.last_active = time.monotonic()
        account.spent += charge
        account.requests += 1
        account.last_active = time.monotonic()
        if token_id is not None and charge:
            self.token_spend[token_id] = self.token_spend.get(token_id, 0) + charge
        return charge

    def take_settlement(self):
        """Moves what was spent (and idle money) out of the leases, for one flush."""
        settlement = Settlement()
        now = time.monotonic()
        for leases, into in (
            (self.accounts, settlement.accounts),
            (self.quotas, settlement.quotas),
        ):
            for key, lease in list(leases.items()):
                idle = lease.reserved == 0 and now - lease.last_active > IDLE_RELEASE_SECONDS
                release = lease.free if idle else 0
                if lease.spent or release:
                    into[key] = (lease.spent, release, lease.requests)
                    lease.held -= lease.spent + release
                    lease.spent = lease.requests = 0
                if idle and lease.held == 0 and not lease.lock.locked():
                    del leases[key]
        settlement.token_spend, self.token_spend = self.token_spend, {}
        return settlement

    def restore(self, settlement):
        """Puts a settlement back after a failed flush; the next flush tries again."""
        for leases, settled in (
            (self.accounts, settlement.accounts),
            (self.quotas, settlement.quotas),
        ):
            for key, (used, release, requests) in settled.items():
                lease = leases.get(key)
                if lease is None:
                    lease = leases[key] = Lease(user_id=key if leases is self.accounts else 0)
                lease.held += used + release
                lease.spent += used
                lease.requests += requests
        for token_id, used in settlement.token_spend.items():
            self.token_spend[token_id] = self.token_spend.get(token_id, 0) + used

    def forget(self, *, users=(), tokens=()):
        """Drops leases whose holds were released behind this process's back."""
        for user_id in users:
            self.accounts.pop(user_id, None)
        for token_id in tokens:
            self.quotas.pop(token_id, None)

    def release_everything(self):
        """A settlement that gives back every lease, for shutdown."""
        for lease in [*self.accounts.values(), *self.quotas.values()]:
            lease.last_active = 0
        return self.take_settlement()


# Database side. These run in the gateway's database thread, or in Celery.


def _expiry():
    return timezone.now() + timedelta(seconds=settings.HOLD_SECONDS)


def hold_acquire(*, owner, user_id, token_id, minimum):
    """Holds more money for `owner`: at least `minimum`, more when funds allow. Returns the
    amount held, or 0 when the available balance (or token quota) is below `minimum`."""
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
        if available < minimum:
            return 0
        for amount in dict.fromkeys((_lease_size(available, minimum), minimum)):
            if _take(rows, token_id, amount):
                _add_to_hold(owner, user_id, token_id, amount)
                return amount
        return 0


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
    holds = Hold.objects.filter(owner=owner, user_id=user_id, token_id=token_id)
    if not holds.update(amount=F("amount") + amount, expires_at=_expiry()):
        Hold.objects.create(
            owner=owner, user_id=user_id, token_id=token_id, amount=amount, expires_at=_expiry()
        )


def holds_settle(*, owner, settlement):
    """Applies a settlement (in the flush's transaction, when there is one). Returns the users
    and tokens whose holds the reaper had released: their leases must be forgotten.

    Rows are locked in one order everywhere (the account or token first, then its hold, and
    by ascending id), as hold_acquire does, so that concurrent flushes and top-ups never
    deadlock.
    """
    from tokens.models import Token

    with transaction.atomic():
        lost_users, lost_tokens = [], []
        for user_id, (used, release, requests) in sorted(settlement.accounts.items()):
            Account.objects.select_for_update().filter(user_id=user_id).exists()
            hold = Hold.objects.filter(owner=owner, user_id=user_id, token__isnull=True)
            if hold.update(amount=F("amount") - used - release):
                Account.objects.filter(user_id=user_id).update(
                    balance=F("balance") - used, held=F("held") - used - release
                )
                charged = used
            else:
                lost_users.append(user_id)
                charged = _charge_without_hold(user_id, used)
            if charged:
                balance_after = Account.objects.values_list("balance", flat=True).get(
                    user_id=user_id
                )
                LedgerEntry.objects.create(
                    account_id=user_id,
                    kind=LedgerEntry.Kind.USAGE,
                    amount=-charged,
                    balance_after=balance_after,
                    request_count=requests,
                )
        token_ids = sorted({*settlement.quotas, *settlement.token_spend})
        for token_id in token_ids:
            spend = settlement.token_spend.get(token_id, 0)
            used, release, _requests = settlement.quotas.get(token_id, (0, 0, 0))
            changes = {"quota_used": F("quota_used") + spend} if spend else {}
            if used or release:
                Token.objects.select_for_update().filter(pk=token_id).exists()
                if Hold.objects.filter(owner=owner, token_id=token_id).update(
                    amount=F("amount") - used - release
                ):
                    changes["quota_held"] = F("quota_held") - used - release
                else:
                    lost_tokens.append(token_id)
            if changes:
                Token.objects.filter(pk=token_id).update(**changes)
        low_balance_check(
            [user_id for user_id, (used, _r, _n) in settlement.accounts.items() if used]
        )
        Hold.objects.filter(owner=owner, amount=0).delete()
        Hold.objects.filter(owner=owner).update(expires_at=_expiry())
        return lost_users, lost_tokens


def _charge_without_hold(user_id, used):
    """The process lost its hold (it stalled past the expiry): charge what is available."""
    balance, held = (
        Account.objects.select_for_update().values_list("balance", "held").get(user_id=user_id)
    )
    charged = max(min(used, balance - held), 0)
    if charged:
        Account.objects.filter(user_id=user_id).update(balance=F("balance") - charged)
    if charged < used:
        log.error(
            "User %s: %s micro-dollars of usage could not be charged", user_id, used - charged
        )
    return charged


def holds_reap(*, now=None):
    """Gives back the holds of processes that stopped touching them. Safe to run again."""
    from tokens.models import Token

    now = now or timezone.now()
    released = 0
    for hold_id in Hold.objects.filter(expires_at__lt=now).values_list("pk", flat=True):
        with transaction.atomic():
            hold = (
                Hold.objects.select_for_update(skip_locked=True)
                .filter(pk=hold_id, expires_at__lt=now)
                .first()
            )
            if hold is None:
                continue
            if hold.token_id:
                Token.objects.filter(pk=hold.token_id).update(
                    quota_held=F("quota_held") - hold.amount
                )
            else:
                Account.objects.filter(user_id=hold.user_id).update(held=F("held") - hold.amount)
            hold.delete()
            released += 1
    return released
