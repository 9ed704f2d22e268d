"""Settlement: what a gateway process's flush charges, in the flush's own transaction.

Once a second the log writer (logs.writer) writes the requests a gateway process answered and,
per account, calls `usage_settle` in the same transaction: the balance goes down by what the
newly written rows cost, spent from the process's hold (billing.holds) as far as it covers it;
one usage ledger row records it (billing.ledger); each token's quota counts what its requests
spent; and the lease money the process gives back is released. A refusal of the database for
one account's rows is recorded here too (`unsettled_record`), for staff to see.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing.holds import held_release, hold_down, hold_lock, quota_settle, quotas_lock
from billing.ledger import Funds, debit_amount, funds_lock, ledger_post
from billing.models import Hold, LedgerEntry, UnsettledUsage

log = logging.getLogger(__name__)


@dataclass
class TokenSpend:
    """What one token's requests cost in a flush."""

    spent: int = 0
    from_lease: int = 0  # of it, spent from the token's quota lease (a limited token)


@dataclass
class Usage:
    """One account's part of a flush, as money: what its newly written log rows cost, and the
    lease money its process gives back."""

    user_id: int
    cost: int = 0
    requests: int = 0  # rows that cost something
    tokens: dict[int, TokenSpend] = field(default_factory=dict)
    release: int = 0
    quota_releases: dict[int, int] = field(default_factory=dict)  # token id → amount given back

    def add_request(self, token_id: int | None, cost: int, *, quota: bool) -> None:
        if not cost:
            return
        self.cost += cost
        self.requests += 1
        if token_id:
            spend = self.tokens.setdefault(token_id, TokenSpend())
            spend.spent += cost
            spend.from_lease += cost if quota else 0


@dataclass(frozen=True)
class Lost:
    """Holds the reaper released while their owner still spent from them: the account's, and
    the quota holds of these tokens."""

    account: bool = False
    tokens: list[int] = field(default_factory=list)


def usage_settle(*, owner: str, usage: Usage, release_all: bool = False) -> Lost:
    """Charges one account's usage from `owner`'s holds and releases what it gives back (all of
    its holds on the account with `release_all`: the owner is gone). Runs in the caller's
    transaction, which also writes the log rows that cost this money.

    Usage whose hold was lost is charged from the available balance instead, never below it
    (billing.ledger.debit_amount); a shortfall is logged as an error.
    """
    funds = funds_lock(usage.user_id)
    token_ids = _tokens_to_settle(owner, usage, release_all)
    quotas_lock(token_ids)
    if funds is None:  # the user was deleted: nothing to charge or release
        return Lost()
    lost_account = _settle_account(owner, usage, funds, release_all)
    lost_tokens = [t for t in token_ids if _settle_quota(owner, usage, t, release_all)]
    Hold.objects.filter(owner=owner, user_id=usage.user_id, amount=0).delete()
    return Lost(account=lost_account, tokens=lost_tokens)


def _tokens_to_settle(owner: str, usage: Usage, release_all: bool) -> list[int]:
    token_ids = set(usage.tokens) | set(usage.quota_releases)
    if release_all:
        token_ids.update(
            Hold.objects.filter(
                owner=owner, user_id=usage.user_id, token__isnull=False
            ).values_list("token_id", flat=True)
        )
    return sorted(token_ids)


def _settle_account(owner: str, usage: Usage, funds: Funds, release_all: bool) -> bool:
    """The balance and the account hold. True if the hold was lost."""
    hold = hold_lock(owner, usage.user_id, None)
    in_hold = hold.amount if hold else 0
    from_hold = min(in_hold, usage.cost)
    from_free = debit_amount(funds, usage.cost - from_hold, partial=True)
    released = in_hold - from_hold if release_all else min(in_hold - from_hold, usage.release)
    if hold:
        hold_down(hold, from_hold + released)
    charged = from_hold + from_free
    if charged:
        ledger_post(
            funds=funds,
            kind=LedgerEntry.Kind.USAGE,
            amount=-charged,
            from_held=from_hold,
            release=released,
            request_count=usage.requests,
        )
    elif released:
        held_release(user_id=usage.user_id, token_id=None, amount=released)
    if charged < usage.cost:
        log.error(
            "User %s: %s micro-dollars of usage could not be charged: the hold was gone and the "
            "balance did not cover it",
            usage.user_id,
            usage.cost - charged,
        )
    return hold is None and bool(usage.cost or usage.release)


def _settle_quota(owner: str, usage: Usage, token_id: int, release_all: bool) -> bool:
    """One token's quota and its hold. True if the hold was lost."""
    spend = usage.tokens.get(token_id, TokenSpend())
    release = usage.quota_releases.get(token_id, 0)
    if not (spend.from_lease or release or release_all):  # no quota lease of it moves
        quota_settle(token_id, spent=spend.spent, released=0)
        return False
    hold = hold_lock(owner, usage.user_id, token_id)
    in_quota = hold.amount if hold else 0
    taken = min(in_quota, spend.from_lease)
    given = in_quota - taken if release_all else min(in_quota - taken, release)
    if hold:
        hold_down(hold, taken + given)
    quota_settle(token_id, spent=spend.spent, released=taken + given)
    return hold is None and bool(spend.from_lease or release)


def unsettled_record(*, owner: str, user_id: int, requests: int, amount: int, error: str) -> None:
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


def unsettled_cleared(*, owner: str, user_ids: Iterable[int]) -> None:
    """These accounts' refused usage went through at last."""
    UnsettledUsage.objects.filter(
        owner=owner, user_id__in=list(user_ids), settled_at__isnull=True
    ).update(settled_at=timezone.now())
