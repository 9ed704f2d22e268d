"""Settlement: what a gateway process's flush charges, in the flush's own transaction.

Once a second the log writer (logs.writer) writes the requests a gateway process answered and
calls `usages_settle` in the same transaction, for every account at once: per account, the
balance goes down by what the newly written rows cost, spent from the process's hold
(billing.holds) as far as it covers it; one usage ledger row records it (billing.ledger); each
token's quota counts what its requests spent; and the lease money the process gives back is
released. Each kind of row is written in one statement for all the accounts: the flush locks
every row it settles, and other processes taking leases wait for those rows until it commits,
so its length must not grow with the accounts. A flush the database refuses is written account
by account instead (`usage_settle`, the same code for one). A refusal of the database for one
account's rows is recorded here too (`unsettled_record`), for staff to see.
"""

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing.holds import (
    HoldRow,
    held_release_all,
    holds_down,
    holds_lock_all,
    quotas_lock,
    quotas_settle,
)
from billing.ledger import Funds, UsagePosting, debit_amount, funds_lock_all, usage_post
from billing.models import Hold, UnsettledUsage

log = logging.getLogger(__name__)

Holds = dict[tuple[int, int | None], HoldRow]


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
    return usages_settle(owner=owner, usages=[usage], release_all=release_all)[usage.user_id]


def usages_settle(
    *, owner: str, usages: Sequence[Usage], release_all: bool = False
) -> dict[int, Lost]:
    """`usage_settle` of several accounts (one Usage each) at once: a flush's. The same rows
    are locked in the same order (accounts by id, then their tokens by id, then the holds),
    and each kind of row is written in one statement for all of them, so the transaction,
    and the time other processes wait for those rows, stays short however many accounts it
    settles. Returns what was lost, by user id."""
    user_ids = [usage.user_id for usage in usages]
    if len(set(user_ids)) != len(user_ids):
        raise ValueError("one Usage per account")
    funds = funds_lock_all(user_ids)
    tokens = _tokens_to_settle(owner, usages, release_all)
    quotas_lock(sorted({t for ids in tokens.values() for t in ids}))
    holds = holds_lock_all(owner, funds)
    book = _Book()
    lost = {}
    for usage in sorted(usages, key=lambda u: u.user_id):
        account = funds.get(usage.user_id)
        if account is None:  # the user was deleted: nothing to charge or release
            lost[usage.user_id] = Lost()
            continue
        lost_account = _settle_account(usage, account, holds, book, release_all)
        lost_tokens = [
            token_id
            for token_id in tokens[usage.user_id]
            if _settle_quota(usage, token_id, holds, book, release_all)
        ]
        lost[usage.user_id] = Lost(account=lost_account, tokens=lost_tokens)
    holds_down(book.holds_down)
    usage_post(book.postings)
    held_release_all(book.releases)
    quotas_settle(book.quotas)
    Hold.objects.filter(owner=owner, user_id__in=list(funds), amount=0).delete()
    return lost


@dataclass
class _Book:
    """What a settlement writes, gathered before it writes it."""

    holds_down: dict[int, int] = field(default_factory=dict)  # hold id → amount
    postings: list[UsagePosting] = field(default_factory=list)
    releases: dict[int, int] = field(default_factory=dict)  # user id → held given back
    quotas: dict[int, tuple[int, int]] = field(default_factory=dict)  # token → spent, released


def _tokens_to_settle(
    owner: str, usages: Sequence[Usage], release_all: bool
) -> dict[int, list[int]]:
    """User id → the ids of its tokens whose quota the settlement moves."""
    token_ids = {u.user_id: set(u.tokens) | set(u.quota_releases) for u in usages}
    if release_all:
        held = Hold.objects.filter(owner=owner, user_id__in=list(token_ids), token__isnull=False)
        for user_id, token_id in held.values_list("user_id", "token_id"):
            token_ids[user_id].add(token_id)
    return {user_id: sorted(ids) for user_id, ids in token_ids.items()}


def _settle_account(
    usage: Usage, funds: Funds, holds: Holds, book: _Book, release_all: bool
) -> bool:
    """The balance and the account hold. True if the hold was lost."""
    hold = holds.get((usage.user_id, None))
    in_hold = hold.amount if hold else 0
    from_hold = min(in_hold, usage.cost)
    from_free = debit_amount(funds, usage.cost - from_hold, partial=True)
    released = in_hold - from_hold if release_all else min(in_hold - from_hold, usage.release)
    if hold and from_hold + released:
        book.holds_down[hold.pk] = from_hold + released
    charged = from_hold + from_free
    if charged:
        book.postings.append(UsagePosting(funds, charged, from_hold, released, usage.requests))
    elif released:
        book.releases[usage.user_id] = released
    if charged < usage.cost:
        log.error(
            "User %s: %s micro-dollars of usage could not be charged: the hold was gone and the "
            "balance did not cover it",
            usage.user_id,
            usage.cost - charged,
        )
    return hold is None and bool(usage.cost or usage.release)


def _settle_quota(
    usage: Usage, token_id: int, holds: Holds, book: _Book, release_all: bool
) -> bool:
    """One token's quota and its hold. True if the hold was lost."""
    spend = usage.tokens.get(token_id, TokenSpend())
    release = usage.quota_releases.get(token_id, 0)
    if not (spend.from_lease or release or release_all):  # no quota lease of it moves
        book.quotas[token_id] = (spend.spent, 0)
        return False
    hold = holds.get((usage.user_id, token_id))
    in_quota = hold.amount if hold else 0
    taken = min(in_quota, spend.from_lease)
    given = in_quota - taken if release_all else min(in_quota - taken, release)
    if hold and taken + given:
        book.holds_down[hold.pk] = taken + given
    book.quotas[token_id] = (spend.spent, taken + given)
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
