"""The ledger: the one place where a balance changes.

Every change of a balance is one call of `ledger_post`: a guarded update of the account row and
the LedgerEntry that records it, in the caller's transaction, on a row the caller locked and
read with `funds_lock` (an account row first, always; then token rows, then holds). So the
ledger of an account sums to its balance, and each entry's `balance_after` is exact. A gateway
flush's usage is the one exception in form, not in rule: `usage_post` makes the same guarded
update and entry for each of its accounts (locked with `funds_lock_all`), in one statement each.

Money held for a purpose (a gateway process's lease, a refund waiting for the payment provider)
is part of the balance but not available: `available = balance - held`. A debit takes from the
available balance, never more: that is the one debit rule, `debit_amount`. A debit that spends
held money says how much (`from_held`), and held money given back with it (`release`) leaves
`held` in the same update. What is held changes otherwise only through billing.holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, Unpack

from django.db.models import BigIntegerField, Case, F, Q, Value, When

from billing.alerts import low_balance_check, low_balance_reset
from billing.models import Account, LedgerEntry, RechargeOrder, RedemptionCode
from console.lib.money import format_usd_price

if TYPE_CHECKING:
    from accounts.models import User


class BillingError(Exception):
    """A refusal with a message a person can act on."""


class InsufficientBalance(BillingError):
    pass


class Cause(TypedDict, total=False):
    """What a ledger entry names as the reason of a balance change."""

    order: RechargeOrder
    redemption_code: RedemptionCode
    staff_user: User | None
    reason: str  # staff's own words: for staff only
    note: str  # what the user reads in their balance history


@dataclass(frozen=True, slots=True)
class Alert:
    """The user's low-balance alert as read with the account: what a change of the balance can
    do to it. Only a debit to below `threshold` of an armed alert sends it (billing.alerts), and
    only a credit to `threshold` or above re-arms a sent one; any other posting leaves it be."""

    threshold: int
    armed: bool  # wanted, and not sent for the current fall
    sent: bool  # sent for the current fall: a recharge to the threshold re-arms it

    def may_send(self, balance: int) -> bool:
        return self.armed and balance < self.threshold

    def may_rearm(self, balance: int) -> bool:
        return self.sent and balance >= self.threshold


@dataclass(frozen=True, slots=True)
class Funds:
    """An account's row as read under its lock."""

    account_id: int
    balance: int
    held: int
    alert: Alert | None = None  # None: not read with the account; a posting looks at it

    @property
    def available(self) -> int:
        return self.balance - self.held


FUNDS_COLUMNS = (
    "balance",
    "held",
    "user__notifications__low_balance_threshold",
    "user__notifications__low_balance_emails",
    "user__notifications__low_balance_alerted",
)


def funds_lock(account_id: int) -> Funds | None:
    """Locks an account row and reads it; None if the user has no account (deleted).

    The user's low-balance alert is read with it, so that a posting that cannot change the
    alert (most of the gateway's charges: well above the threshold, or alerted already) costs
    no look at it. Only the account row is locked."""
    return funds_lock_all([account_id]).get(account_id)


def funds_lock_all(account_ids: Iterable[int]) -> dict[int, Funds]:
    """`funds_lock` of several accounts in one statement, locked in id order (the order every
    settlement takes them in); accounts that do not exist are missing from the answer."""
    rows = (
        Account.objects.select_for_update(no_key=True, of=("self",))
        .filter(user_id__in=sorted(set(account_ids)))
        .order_by("user_id")
        .values_list("user_id", *FUNDS_COLUMNS)
    )
    return {row[0]: _funds(*row) for row in rows}


def _funds(account_id, balance, held, threshold, wanted, sent) -> Funds:
    if threshold is None:  # no alert settings: no alert to send or re-arm
        alert = Alert(0, armed=False, sent=False)
    else:
        alert = Alert(threshold, armed=wanted and not sent, sent=sent)
    return Funds(account_id, balance=balance, held=held, alert=alert)


def debit_amount(funds: Funds, wanted: int, *, partial: bool = False) -> int:
    """The one debit rule: what a debit of `wanted` takes from the available balance.

    All of it, or InsufficientBalance. With `partial`, as much as is available, down to nothing:
    for what cannot be refused any more (usage already served whose hold is gone, a refund
    forced by staff). Never below zero, whatever is asked.
    """
    available = max(funds.available, 0)
    if wanted <= available:
        return wanted
    if partial:
        return available
    raise InsufficientBalance(
        f"The available balance ({format_usd_price(available)}) does not cover "
        f"{format_usd_price(wanted)}."
    )


def ledger_post(
    *,
    funds: Funds,
    kind: str,
    amount: int,
    from_held: int = 0,
    release: int = 0,
    request_count: int | None = None,
    **cause: Unpack[Cause],
) -> LedgerEntry:
    """Changes a balance by `amount` (negative for a debit) and writes its ledger entry.

    `funds` is the account as read under its lock in this transaction. Of a debit, `from_held`
    is money that was held for it; `release` is held money given back besides. What a debit
    takes beyond `from_held` must be available (see `debit_amount`): the update is guarded by
    it all the same.
    """
    if not amount:
        raise ValueError("a ledger entry moves money")
    changes = {"balance": F("balance") + amount}
    if from_held or release:
        changes["held"] = F("held") - from_held - release
    rows = Account.objects.filter(pk=funds.account_id)
    if (from_free := -amount - from_held) > 0:
        rows = rows.filter(balance__gte=F("held") + from_free)
    if not rows.update(**changes):
        raise InsufficientBalance(
            f"The available balance does not cover {format_usd_price(from_free)}; "
            "nothing was taken."
        )
    entry = LedgerEntry.objects.create(
        account_id=funds.account_id,
        kind=kind,
        amount=amount,
        balance_after=funds.balance + amount,
        request_count=request_count,
        **cause,
    )
    _alert(funds, balance=entry.balance_after, credited=amount > 0)
    return entry


@dataclass(frozen=True, slots=True)
class UsagePosting:
    """One account's usage in a gateway flush: `charged` (positive) is debited, `from_held` of
    it from the process's hold, and `release` of that hold is given back besides."""

    funds: Funds
    charged: int
    from_held: int
    release: int
    requests: int


# Rows per statement: each brings a few parameters, and SQLite allows some 32,000.
POSTINGS_PER_STATEMENT = 500


def in_statements[T](rows: Sequence[T]) -> Iterator[Sequence[T]]:
    """`rows` in runs of at most POSTINGS_PER_STATEMENT: a statement each."""
    for start in range(0, len(rows), POSTINGS_PER_STATEMENT):
        yield rows[start : start + POSTINGS_PER_STATEMENT]


def usage_post(postings: Sequence[UsagePosting]) -> None:
    """`ledger_post` of a usage debit for each of several accounts, each locked and read in
    this transaction: the same guarded update of every account row, in one statement (per
    POSTINGS_PER_STATEMENT accounts), and their ledger entries in one insert."""
    for chunk in in_statements(postings):
        _usage_post(chunk)


def _usage_post(postings: Sequence[UsagePosting]) -> None:
    if any(p.charged <= 0 or p.from_held > p.charged for p in postings):
        raise ValueError("a usage posting debits money, at most all of it from what was held")
    accounts = [p.funds.account_id for p in postings]
    # What is taken beyond the hold must be available, as in ledger_post: guarded row by row.
    from_free = {p.funds.account_id: p.charged - p.from_held for p in postings}
    guarded = [account for account, amount in from_free.items() if amount > 0]
    covered = Q(pk__in=[account for account, amount in from_free.items() if amount <= 0])
    if guarded:
        covered |= Q(pk__in=guarded, balance__gte=F("held") + by_row(from_free))
    updated = Account.objects.filter(covered).update(
        balance=F("balance") - by_row({p.funds.account_id: p.charged for p in postings}),
        held=F("held") - by_row({p.funds.account_id: p.from_held + p.release for p in postings}),
    )
    if updated != len(set(accounts)):
        raise InsufficientBalance(
            "An available balance does not cover the usage charged from it; nothing was taken."
        )
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            account_id=p.funds.account_id,
            kind=LedgerEntry.Kind.USAGE,
            amount=-p.charged,
            balance_after=p.funds.balance - p.charged,
            request_count=p.requests,
        )
        for p in postings
    )
    alerts = [
        p.funds.account_id
        for p in postings
        if p.funds.alert is None or p.funds.alert.may_send(p.funds.balance - p.charged)
    ]
    if alerts:
        low_balance_check(alerts)


def by_row(values: Mapping[int, int]) -> Case:
    """A value per primary key, for one UPDATE of many rows: CASE pk WHEN … THEN … END."""
    return Case(
        *(When(pk=pk, then=Value(value)) for pk, value in values.items()),
        default=Value(0),
        output_field=BigIntegerField(),
    )


def _alert(funds: Funds, *, balance: int, credited: bool) -> None:
    """A credit re-arms the low-balance alert; a debit may send it. Skipped when the alert as
    read under the lock shows that this posting cannot change it."""
    alert = funds.alert
    if credited:
        if alert is None or alert.may_rearm(balance):
            low_balance_reset(funds.account_id)
    elif alert is None or alert.may_send(balance):
        low_balance_check([funds.account_id])
