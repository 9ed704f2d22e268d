"""The ledger: the one place where a balance changes.

Every change of a balance is one call of `ledger_post`: a guarded update of the account row and
the LedgerEntry that records it, in the caller's transaction, on a row the caller locked and
read with `funds_lock` (an account row first, always; then token rows, then holds). So the
ledger of an account sums to its balance, and each entry's `balance_after` is exact.

Money held for a purpose (a gateway process's lease, a refund waiting for the payment provider)
is part of the balance but not available: `available = balance - held`. A debit takes from the
available balance, never more: that is the one debit rule, `debit_amount`. A debit that spends
held money says how much (`from_held`), and held money given back with it (`release`) leaves
`held` in the same update. What is held changes otherwise only through billing.holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, Unpack

from django.db.models import F

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
class Funds:
    """An account's row as read under its lock."""

    account_id: int
    balance: int
    held: int

    @property
    def available(self) -> int:
        return self.balance - self.held


def funds_lock(account_id: int) -> Funds | None:
    """Locks an account row and reads it; None if the user has no account (deleted)."""
    row = (
        Account.objects.select_for_update(no_key=True)
        .filter(user_id=account_id)
        .values_list("balance", "held")
        .first()
    )
    return None if row is None else Funds(account_id, balance=row[0], held=row[1])


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
    _alert(funds.account_id, credited=amount > 0)
    return entry


def _alert(account_id: int, *, credited: bool) -> None:
    """A credit re-arms the low-balance alert; a debit may send it."""
    if credited:
        low_balance_reset(account_id)
    else:
        low_balance_check([account_id])
