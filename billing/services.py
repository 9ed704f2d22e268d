"""Every workflow that moves money. Each runs in one transaction and writes its ledger rows.

A balance changes only through billing.ledger.ledger_post, under the lock of its account row:
the ledger entry is written with the balance update, so the ledger of an account always sums
to its balance, and a debit takes from the available balance only (billing.ledger.debit_amount),
so concurrent debits can never take a balance below zero.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import hmac
import io
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, Unpack

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.holds import held_release, held_take
from billing.ledger import (
    BillingError,
    Cause,
    Funds,
    InsufficientBalance,
    debit_amount,
    funds_lock,
    ledger_post,
)
from billing.models import (
    Account,
    BonusTier,
    LedgerEntry,
    Line,
    ModelPrice,
    OrderAction,
    PaymentEvent,
    PriceAdjustment,
    RechargeOrder,
    RedemptionBatch,
    RedemptionCode,
)
from billing.signals import price_adjustments_published
from console.lib import invalidation
from console.lib.money import format_dollars_plain, format_usd, format_usd_price
from console.lib.ratelimit import limit_reached

if TYPE_CHECKING:
    from accounts.models import User
    from billing.providers import PaymentUpdate

log = logging.getLogger(__name__)

Kind = LedgerEntry.Kind
Status = RechargeOrder.Status

# BillingError and InsufficientBalance, which the workflows here raise, are billing.ledger's:
# callers catch them as services.BillingError and services.InsufficientBalance all the same.


class OrderStateError(BillingError):
    pass


class RefundRefused(BillingError):
    pass


class RefundFailed(BillingError):
    """The payment provider did not refund: nothing was taken back."""


class RedemptionRefused(BillingError):
    pass


# Balance and ledger


def account_for(user: User) -> Account:
    return Account.objects.get_or_create(user=user)[0]


def _locked_funds(user_id: int) -> Funds:
    """A user's account, made if it is missing, locked and read."""
    while (funds := funds_lock(user_id)) is None:
        Account.objects.get_or_create(user_id=user_id)
    return funds


def balance_credit(*, user: User, amount: int, kind: str, **cause: Unpack[Cause]) -> LedgerEntry:
    """Adds money to a balance. `cause` names the order, code, staff user and reason."""
    if amount <= 0:
        raise ValueError("a credit must be positive")
    with transaction.atomic():
        funds = _locked_funds(user.pk)
        # A gateway that just refused this user for want of money must look again.
        transaction.on_commit(lambda: invalidation.publish(users=[funds.account_id]))
        return ledger_post(funds=funds, kind=kind, amount=amount, **cause)


def balance_charge(*, user: User, amount: int, kind: str, **cause: Unpack[Cause]) -> LedgerEntry:
    """Takes money from the available balance, or raises InsufficientBalance."""
    if amount <= 0:
        raise ValueError("a charge must be positive")
    with transaction.atomic():
        funds = _locked_funds(user.pk)
        return ledger_post(funds=funds, kind=kind, amount=-debit_amount(funds, amount), **cause)


# What the user reads in their balance history when staff wrote no note of their own. Staff's
# reason is theirs alone: it stays in the ledger and the order's actions, never shown to the user.
NOTE_ADDED = "Added by support."
NOTE_TAKEN_OFF = "Corrected by support."
NOTE_CREDITED = "Credited by support once your payment was confirmed."
NOTE_REFUNDED = "Refunded by support."
NOTE_FAILED = "Closed by support."


def _note(note: str, default: str) -> str:
    return " ".join(note.split())[:200] or default


def balance_adjust(
    *, user: User, amount: int, staff_user: User, reason: str, note: str = ""
) -> LedgerEntry:
    """A staff correction of a balance, up or down. The reason stays among staff; the user
    reads `note` (or a plain default) in their balance history."""
    if not reason.strip():
        raise BillingError("Give a reason: it is kept in the ledger.")
    if amount == 0:
        raise BillingError("The amount cannot be zero.")
    cause: Cause = {
        "staff_user": staff_user,
        "reason": reason.strip(),
        "note": _note(note, NOTE_ADDED if amount > 0 else NOTE_TAKEN_OFF),
    }
    if amount > 0:
        return balance_credit(user=user, amount=amount, kind=Kind.ADJUSTMENT, **cause)
    return balance_charge(user=user, amount=-amount, kind=Kind.ADJUSTMENT, **cause)


def spend_between(user: User, start: datetime, end: datetime) -> int:
    """Micro-dollars of API usage settled between two times."""
    total = LedgerEntry.objects.filter(
        account__user=user, kind=Kind.USAGE, created_at__gte=start, created_at__lt=end
    ).aggregate(total=Sum("amount"))["total"]
    return -(total or 0)


# Bonus tiers


@dataclass(frozen=True)
class TierStatus:
    total_recharged: int
    current: BonusTier | None
    next: BonusTier | None

    @property
    def to_next(self) -> int | None:
        return max(self.next.threshold - self.total_recharged, 0) if self.next else None


def tier_status(user: User) -> TierStatus:
    total = account_for(user).total_recharged
    tiers = list(BonusTier.objects.all())
    current = next((t for t in reversed(tiers) if t.threshold <= total), None)
    upcoming = next((t for t in tiers if t.threshold > total), None)
    return TierStatus(total_recharged=total, current=current, next=upcoming)


def bonus_for(user: User, amount: int) -> tuple[int, BonusTier | None]:
    """The bonus a recharge of `amount` earns: the tier reached with this recharge counted."""
    reached = account_for(user).total_recharged + amount
    tier = BonusTier.objects.filter(threshold__lte=reached).order_by("-threshold").first()
    if tier is None or tier.percent <= 0:
        return 0, None
    bonus = (Decimal(amount) * tier.percent / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(bonus), tier


# Recharge orders


def order_create(*, user: User, amount: int, provider: str) -> RechargeOrder:
    if not settings.RECHARGE_MIN <= amount <= settings.RECHARGE_MAX:
        raise BillingError(
            f"Recharge between {format_usd(settings.RECHARGE_MIN)} "
            f"and {format_usd(settings.RECHARGE_MAX)}."
        )
    bonus, _tier = bonus_for(user, amount)
    for _attempt in range(5):
        try:
            with transaction.atomic():
                return RechargeOrder.objects.create(
                    number=RechargeOrder.new_number(),
                    user=user,
                    amount=amount,
                    bonus=bonus,
                    provider=provider,
                )
        except IntegrityError:
            continue  # an order number drawn twice; draw again
    raise BillingError("Could not number the order; please try again.")


def order_credit(
    *,
    order: RechargeOrder,
    staff_user: User | None = None,
    reason: str = "",
    note: str = "",
    payment_reference: str = "",
) -> bool:
    """Credits an order's amount and bonus, exactly once. Returns False if already done.

    Staff crediting by hand give a reason, kept among staff, and may give the user a note for
    their balance history."""
    if staff_user is not None and not reason.strip():
        raise BillingError("Give a reason for crediting by hand.")
    now = timezone.now()
    with transaction.atomic():
        changes: dict[str, Any] = {
            "status": Status.CREDITED,
            "credited_at": now,
            "paid_at": Coalesce("paid_at", now),
        }
        if payment_reference:
            changes["payment_reference"] = payment_reference
        moved = (
            RechargeOrder.objects.filter(pk=order.pk)
            .exclude(status__in=[Status.CREDITED, Status.REFUNDING, Status.REFUNDED])
            .update(**changes)
        )
        if not moved:
            return False
        cause: Cause = {"order": order}
        if staff_user is not None:
            cause["staff_user"] = staff_user
            cause["reason"] = reason.strip()
            cause["note"] = _note(note, NOTE_CREDITED)
        balance_credit(user=order.user, amount=order.amount, kind=Kind.RECHARGE, **cause)
        if order.bonus:
            balance_credit(user=order.user, amount=order.bonus, kind=Kind.BONUS, **cause)
        Account.objects.filter(user=order.user).update(
            total_recharged=F("total_recharged") + order.amount
        )
        if staff_user is not None:
            OrderAction.objects.create(
                order=order, action=OrderAction.Action.CREDIT, staff_user=staff_user, reason=reason
            )
    order.refresh_from_db()
    return True


def order_mark_failed(
    *, order: RechargeOrder, reason: str, staff_user: User | None = None, note: str = ""
) -> None:
    """Fails a pending or expired order. `failure_reason` is what the user reads on the order:
    the reason itself when the code fails it, the note (or a default) when staff do."""
    if staff_user is not None and not reason.strip():
        raise BillingError("Give a reason for marking the order failed.")
    shown = reason if staff_user is None else _note(note, NOTE_FAILED)
    with transaction.atomic():
        moved = RechargeOrder.objects.filter(
            pk=order.pk, status__in=[Status.PENDING, Status.EXPIRED]
        ).update(status=Status.FAILED, failed_at=timezone.now(), failure_reason=shown[:500])
        if not moved:
            raise OrderStateError(
                f"Order {order.number} is {order.get_status_display().lower()}; "
                "only a pending or expired order can be marked failed."
            )
        if staff_user is not None:
            OrderAction.objects.create(
                order=order,
                action=OrderAction.Action.MARK_FAILED,
                staff_user=staff_user,
                reason=reason,
            )
    order.refresh_from_db()


def order_expire(*, order: RechargeOrder) -> bool:
    moved = RechargeOrder.objects.filter(pk=order.pk, status=Status.PENDING).update(
        status=Status.EXPIRED, expired_at=timezone.now()
    )
    return bool(moved)


# Refunds: three steps, so that no row is locked while the provider is asked.

# A refund pending for longer than this was left by a process that died between its steps
# (the payment client gives up well before): asking again asks the provider once more.
REFUND_PATIENCE = timedelta(minutes=15)


@dataclass(frozen=True)
class RefundClaim:
    """A refund asked for and not finished: the order, what it takes back (held on the balance
    until then), and when this attempt claimed it."""

    order: RechargeOrder
    take_back: int
    claimed_at: datetime


def order_refund(
    *, order: RechargeOrder, staff_user: User, reason: str, force: bool = False, note: str = ""
) -> None:
    """Takes a credited order's amount and bonus back, and refunds it at the provider.

    Refuses when the available balance is below what was credited, unless forced: then only
    what is available is taken back, and the shortfall is recorded.

    1. In a short transaction the order is marked "refund pending", by whom and when, and what
       it takes back is held on the balance, so that the gateway cannot spend it meanwhile.
    2. The provider refunds, with no transaction open and no row locked. Its idempotency key is
       the order's, so asking it twice refunds once.
    3. In a short transaction the held money is debited with its ledger entry and the order is
       refunded; or, if the provider refused, the money is released, the order is credited
       again, the failure is recorded, and RefundFailed says what the provider said.

    A second request while a refund is pending is refused, unless it has been pending for
    longer than REFUND_PATIENCE: then it asks the provider again and finishes the refund.
    Call it outside any transaction, or step 2 waits with the locks of step 1 still held.
    """
    from billing.providers import RefundDeclined, get_provider

    reason = reason.strip()
    if not reason:
        raise BillingError("Give a reason for the refund.")
    provider = get_provider(order.provider)
    claim = _refund_claim(order=order, staff_user=staff_user, force=force)
    attempt = claim.order.actions.filter(action=OrderAction.Action.REFUND_FAILED).count()
    try:
        provider.refund(claim.order, attempt=attempt)
    except RefundDeclined as error:
        detail = _one_line(error)
        _refund_undo(claim, staff_user=staff_user, reason=reason, detail=detail)
        raise RefundFailed(
            f"{provider.label} did not refund it: {detail}. "
            "Nothing was taken back; the order is credited again."
        ) from error
    except Exception as error:  # no answer: it may have refunded, so the refund stays pending
        log.warning("Refund of order %s: no answer from %s", claim.order.number, provider.name)
        raise RefundFailed(
            f"{provider.label} did not answer ({_one_line(error)}), so whether it refunded is "
            "unknown. The order stays “refund pending” with its money held; refund it again "
            f"in {REFUND_PATIENCE.seconds // 60} minutes to ask once more (it refunds once)."
        ) from error
    _refund_finish(claim, staff_user=staff_user, reason=reason, note=_note(note, NOTE_REFUNDED))
    order.refresh_from_db()


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:400] or type(error).__name__


def _refund_claim(*, order: RechargeOrder, staff_user: User, force: bool) -> RefundClaim:
    """Step 1: marks the order "refund pending" and holds what it takes back."""
    now = timezone.now()
    with transaction.atomic():
        locked = RechargeOrder.objects.select_for_update().get(pk=order.pk)
        if locked.status == Status.REFUNDING:
            return _refund_claim_again(locked, staff_user, now)
        if locked.status != Status.CREDITED:
            raise OrderStateError(
                f"Order {locked.number} is {locked.get_status_display().lower()}; "
                "only a credited order can be refunded."
            )
        take_back = _refund_hold(locked, force)
        RechargeOrder.objects.filter(pk=locked.pk).update(
            status=Status.REFUNDING,
            refund_requested_at=now,
            refund_requested_by=staff_user,
            refund_held=take_back,
        )
    return RefundClaim(order=locked, take_back=take_back, claimed_at=now)


def _refund_hold(order: RechargeOrder, force: bool) -> int:
    """Holds what a refund takes back: all the order credited, or, forced, what is available."""
    funds = _locked_funds(order.user_id)
    try:
        take_back = debit_amount(funds, order.total, partial=force)
    except InsufficientBalance:
        raise RefundRefused(
            f"The user's available balance is {format_usd_price(funds.available)}, "
            f"below the {format_usd_price(order.total)} this order credited. "
            "Refund anyway with “force” and a reason; the balance will go to zero."
        ) from None
    if take_back and not held_take(user_id=order.user_id, token_id=None, amount=take_back):
        raise RefundRefused("The balance changed meanwhile; refund again.")
    return take_back


def _refund_claim_again(order: RechargeOrder, staff_user: User, now: datetime) -> RefundClaim:
    """A refund is pending already: refused while it may still be under way, else claimed."""
    asked = order.refund_requested_at
    if asked is not None and now - asked < REFUND_PATIENCE:
        raise OrderStateError(
            f"A refund of order {order.number} is waiting for the payment provider, asked by "
            f"{order.refund_requested_by} at {timezone.localtime(asked):%H:%M:%S}; it is not "
            "asked twice. Look again in a minute; if it is still pending "
            f"{REFUND_PATIENCE.seconds // 60} minutes after it was asked, refund again."
        )
    RechargeOrder.objects.filter(pk=order.pk).update(
        refund_requested_at=now, refund_requested_by=staff_user
    )
    return RefundClaim(order=order, take_back=order.refund_held, claimed_at=now)


def _refund_finish(claim: RefundClaim, *, staff_user: User, reason: str, note: str) -> None:
    """Step 3, refunded: debits the held money, with its ledger entry, once."""
    order = claim.order
    with transaction.atomic():
        finished = RechargeOrder.objects.filter(pk=order.pk, status=Status.REFUNDING).update(
            status=Status.REFUNDED,
            refunded_at=timezone.now(),
            refunded_amount=claim.take_back,
            refund_held=0,
        )
        if not finished:  # another attempt finished or undid it while the provider refunded
            log.error("Refund of order %s done at the provider but no longer pending", order.number)
            raise RefundFailed(
                f"{order.number} was refunded at the provider, but another attempt changed the "
                "order meanwhile. Check its history and the payment at the provider."
            )
        if claim.take_back:
            ledger_post(
                funds=_locked_funds(order.user_id),
                kind=Kind.REFUND,
                amount=-claim.take_back,
                from_held=claim.take_back,
                order=order,
                staff_user=staff_user,
                reason=reason,
                note=note,
            )
        Account.objects.filter(user_id=order.user_id).update(
            total_recharged=F("total_recharged") - order.amount
        )
        detail = ""
        if claim.take_back < order.total:
            detail = (
                f"Took back {format_usd_price(claim.take_back)} of "
                f"{format_usd_price(order.total)} (forced)."
            )
        OrderAction.objects.create(
            order=order,
            action=OrderAction.Action.REFUND,
            staff_user=staff_user,
            reason=reason,
            detail=detail,
        )


def _refund_undo(claim: RefundClaim, *, staff_user: User, reason: str, detail: str) -> None:
    """Step 3, refused by the provider: the order is credited again, its money released."""
    order = claim.order
    with transaction.atomic():
        undone = RechargeOrder.objects.filter(
            pk=order.pk, status=Status.REFUNDING, refund_requested_at=claim.claimed_at
        ).update(
            status=Status.CREDITED,
            refund_requested_at=None,
            refund_requested_by=None,
            refund_held=0,
        )
        if not undone:  # another attempt claimed it since
            return
        if claim.take_back:
            held_release(user_id=order.user_id, token_id=None, amount=claim.take_back)
        OrderAction.objects.create(
            order=order,
            action=OrderAction.Action.REFUND_FAILED,
            staff_user=staff_user,
            reason=reason,
            detail=detail,
        )


# Payment callbacks


def payment_event_reject(*, provider: str, detail: str, source: str) -> PaymentEvent | None:
    """Records a callback whose signature did not verify. Nothing else happens. Anyone can post
    these, so each source address gets only a few rows an hour, and all of them together a few
    more; the rest are only counted, in the log."""
    hour = 3600
    per_source, per_provider = settings.WEBHOOK_REJECTS_RECORDED_PER_HOUR
    if limit_reached(
        f"webhook-rejects:{provider}:{source}", limit=per_source, window=hour
    ) or limit_reached(f"webhook-rejects:{provider}", limit=per_provider, window=hour):
        log.warning("Rejected %s payment callback from %s (not recorded)", provider, source)
        return None
    log.warning("Rejected %s payment callback from %s: %s", provider, source, detail)
    return PaymentEvent.objects.create(
        provider=provider,
        outcome=PaymentEvent.Outcome.BAD_SIGNATURE,
        detail=f"From {source}: {detail}"[:500],
    )


REPLAYS_RECORDED = 5


def payment_event_handle(*, provider: str, update: PaymentUpdate) -> PaymentEvent:
    """Applies a verified payment update (billing.providers.PaymentUpdate) once per event id."""
    Outcome = PaymentEvent.Outcome
    record = {
        "provider": provider,
        "event_id": update.event_id,
        "event_type": update.event_type,
    }
    try:
        with transaction.atomic():
            event = PaymentEvent.objects.create(**record, outcome=Outcome.IGNORED)
            outcome, order, detail = _apply_update(provider, update)
            event.outcome, event.order, event.detail = outcome, order, detail[:500]
            event.save(update_fields=["outcome", "order", "detail"])
    except IntegrityError:
        # Another delivery of this event id got there first. Its replays get a few rows of
        # their own, not one each: a signed event can be posted again many times.
        first = PaymentEvent.objects.filter(**record).exclude(outcome=Outcome.REPLAY).first()
        replays = PaymentEvent.objects.filter(**record, outcome=Outcome.REPLAY)
        recorded = list(replays[:REPLAYS_RECORDED])
        if len(recorded) >= REPLAYS_RECORDED:
            return recorded[0]
        event = PaymentEvent.objects.create(
            **record,
            outcome=Outcome.REPLAY,
            order=first.order if first else None,
            detail="Already processed.",
        )
    if event.outcome in {Outcome.UNKNOWN_ORDER, Outcome.AMOUNT_MISMATCH}:
        log.warning("%s payment event %s: %s", provider, update.event_id, event.detail)
    return event


def _apply_update(provider: str, update: PaymentUpdate) -> tuple[str, RechargeOrder | None, str]:
    Outcome = PaymentEvent.Outcome
    if update.status is None:
        return Outcome.IGNORED, None, f"Event type {update.event_type} needs no action."
    order = RechargeOrder.objects.filter(number=update.order_number, provider=provider).first()
    if order is None:
        return Outcome.UNKNOWN_ORDER, None, f"No {provider} order {update.order_number!r}."
    if update.status == "paid":
        if update.amount != order.amount:
            return (
                Outcome.AMOUNT_MISMATCH,
                order,
                f"Paid {format_usd_price(update.amount or 0)} for an order of "
                f"{format_usd_price(order.amount)}; not credited. Check with the provider.",
            )
        if order_credit(order=order, payment_reference=update.payment_reference):
            return Outcome.CREDITED, order, ""
        return Outcome.ALREADY_DONE, order, f"Order was already {order.status}."
    if update.status == "failed":
        moved = RechargeOrder.objects.filter(pk=order.pk, status=Status.PENDING).update(
            status=Status.FAILED, failed_at=timezone.now(), failure_reason="Payment failed."
        )
        return (Outcome.FAILED if moved else Outcome.ALREADY_DONE), order, ""
    if update.status == "expired":
        return (Outcome.EXPIRED if order_expire(order=order) else Outcome.ALREADY_DONE), order, ""
    return Outcome.IGNORED, order, f"Unknown status {update.status!r}."


def orders_reconcile(*, now: datetime | None = None, dry_run: bool = False) -> dict[str, int]:
    """Asks providers about pending orders, and expires abandoned ones. Safe to run again."""
    from billing.providers import get_provider

    now = now or timezone.now()
    summary = {"checked": 0, "credited": 0, "failed": 0, "expired": 0}
    counted = {"paid": "credited", "failed": "failed", "expired": "expired"}
    pending = RechargeOrder.objects.filter(
        status=Status.PENDING, created_at__lt=now - timedelta(minutes=2)
    ).select_related("user")
    for order in pending.iterator():
        summary["checked"] += 1
        update = get_provider(order.provider).fetch(order)
        if update is not None and update.status in counted:
            if dry_run:
                summary[counted[update.status]] += 1
            else:
                event = payment_event_handle(provider=order.provider, update=update)
                if event.outcome in summary:
                    summary[event.outcome] += 1
        elif now - order.created_at > settings.RECHARGE_EXPIRE_AFTER and (
            dry_run or order_expire(order=order)
        ):
            summary["expired"] += 1
    return summary


# Redemption codes


def _code_hash(code: str, secret: str | None = None) -> str:
    normalized = code.strip().upper().replace(" ", "")
    secret = secret or settings.SECRET_KEY
    return hmac.new(secret.encode(), normalized.encode(), hashlib.sha256).hexdigest()


def _code_hashes(code: str) -> list[str]:
    """Its hash under SECRET_KEY and the keys it replaced: a rotation keeps codes redeemable."""
    return [
        _code_hash(code, secret) for secret in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)
    ]


def redemption_batch_create(
    *, name: str, amount: int, count: int, expires_at: datetime | None, staff_user: User
) -> tuple[RedemptionBatch, str]:
    """Makes `count` codes and returns (batch, CSV text). The codes are not kept in the clear."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    with transaction.atomic():
        batch = RedemptionBatch.objects.create(
            name=name, amount=amount, count=count, expires_at=expires_at, created_by=staff_user
        )
        codes = []
        for _ in range(count):
            raw = "".join(secrets.choice(alphabet) for _ in range(16))
            code = "-".join(raw[i : i + 4] for i in range(0, 16, 4))
            codes.append(code)
        RedemptionCode.objects.bulk_create(
            RedemptionCode(batch=batch, code_hash=_code_hash(code), hint=code[-4:])
            for code in codes
        )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["code", "amount_usd", "batch", "expires_at"])
    for code in codes:
        writer.writerow(
            [
                code,
                format_dollars_plain(amount),
                name,
                expires_at.isoformat() if expires_at else "",
            ]
        )
    return batch, out.getvalue()


def code_redeem(*, user: User, code: str) -> LedgerEntry:
    """Credits a redemption code's amount once, whoever tries it at the same moment."""
    now = timezone.now()
    with transaction.atomic():
        found = (
            RedemptionCode.objects.select_related("batch")
            .filter(code_hash__in=_code_hashes(code))
            .first()
        )
        if found is None:
            raise RedemptionRefused("That code does not exist. Check it for typos.")
        if found.voided:
            raise RedemptionRefused("That code has been withdrawn.")
        if found.batch.expires_at and found.batch.expires_at <= now:
            raise RedemptionRefused("That code has expired.")
        claimed = RedemptionCode.objects.filter(pk=found.pk, redeemed_at__isnull=True).update(
            redeemed_by=user, redeemed_at=now
        )
        if not claimed:
            raise RedemptionRefused("That code has already been used.")
        return balance_credit(
            user=user, amount=found.batch.amount, kind=Kind.REDEMPTION, redemption_code=found
        )


# Prices
#
# A price of a model or a line (a multiplier, the price of a call) changes only by price
# adjustments published in an announcement. price_change records them and announces them in one
# transaction, and applies those due at once; the others apply from their time
# (price_adjustments_apply_due, run every minute by beat), and only once their announcement is
# public. The models refuse every other write of a price (billing.models.PricesOutOfSave).

# The largest value each kind of price takes: a multiplier's column has 6 whole digits; a call's
# price, in micro-dollars, fits the adjustment's columns.
MAX_MULTIPLIER = Decimal(10**6)
MAX_CALL_PRICE = 10**14

Field = PriceAdjustment.Field


def price_change(
    *,
    target: ModelPrice | Line,
    new_values: Mapping[str, Decimal | int | str],
    reason: str,
    staff_user: User | None,
    effective_at: datetime | None = None,
    note: str = "",
) -> list[PriceAdjustment]:
    """Changes a model's or a line's prices: records one adjustment per changed value, publishes
    them in one announcement (emailed to subscribers once committed), and applies them now, or
    from `effective_at` if it is later.

    `new_values` maps PriceAdjustment.Field values to the new numbers (a call's price in
    micro-dollars). Unchanged values are skipped; nothing changed, nothing is announced. The
    announcement starts with `note`, or the reason if there is none. Returns the adjustments,
    each linked to its announcement.
    """
    now = timezone.now()
    effective_at = max(effective_at or now, now)
    reason = reason.strip()
    if not reason:
        raise BillingError("Give a reason for the price change; it is published.")
    values = {field: _price_value(target, field, value) for field, value in new_values.items()}
    batch = PriceAdjustment.new_batch()
    with transaction.atomic():
        target = type(target)._default_manager.select_for_update().get(pk=target.pk)
        adjustments = [
            PriceAdjustment.objects.create(
                model_price=target if isinstance(target, ModelPrice) else None,
                line=target if isinstance(target, Line) else None,
                field=field,
                old_value=getattr(target, _attribute(field)),
                new_value=value,
                effective_at=effective_at,
                reason=reason,
                batch=batch,
                staff_user=staff_user,
            )
            for field, value in values.items()
            if Decimal(getattr(target, _attribute(field))) != value
        ]
        if not adjustments:
            return []
        price_adjustments_announce(
            adjustments=adjustments, staff_user=staff_user, note=note.strip() or reason
        )
        if effective_at <= now:
            for adjustment in adjustments:
                _apply_adjustment(adjustment, now)
    return adjustments


def price_adjustments_announce(
    *, adjustments: list[PriceAdjustment], staff_user: User | None, note: str = ""
) -> Any:
    """Publishes adjustments not yet announced in one announcement, which the announcements app
    writes (it sits above billing and answers billing.signals.price_adjustments_published).
    Raises BillingError, undoing everything, if none of them is left to announce or if nothing
    published them. Returns the announcement."""
    with transaction.atomic():
        fresh = list(
            PriceAdjustment.objects.select_for_update()
            .filter(pk__in=[a.pk for a in adjustments], announcement__isnull=True)
            .order_by("id")
        )
        if not fresh:
            raise BillingError("These price adjustments are all published already.")
        price_adjustments_published.send(
            sender=PriceAdjustment, adjustments=fresh, staff_user=staff_user, note=note
        )
        published = PriceAdjustment.objects.filter(
            pk__in=[a.pk for a in fresh], announcement__published_at__isnull=False
        )
        if published.count() != len(fresh):
            raise BillingError(
                "Nothing published these price adjustments (is console.announcements "
                "installed?); nothing was changed."
            )
    for adjustment in adjustments:
        adjustment.refresh_from_db(fields=["announcement"])
    fresh[0].refresh_from_db(fields=["announcement"])
    return fresh[0].announcement


def price_adjustments_apply_due(*, now: datetime | None = None, dry_run: bool = False) -> int:
    """Applies the announced adjustments whose time has come. Safe to run again. An adjustment
    that no announcement published waits (staff publish it from the admin)."""
    now = now or timezone.now()
    due = PriceAdjustment.objects.filter(
        applied_at__isnull=True,
        effective_at__lte=now,
        announcement__published_at__lte=timezone.now(),
    )
    applied = 0
    for adjustment in due.order_by("effective_at", "id"):
        if dry_run:
            applied += 1
            continue
        with transaction.atomic():
            claimed = PriceAdjustment.objects.filter(
                pk=adjustment.pk, applied_at__isnull=True
            ).update(applied_at=now)
            if claimed:
                _apply_adjustment(adjustment, now, claimed=True)
                applied += 1
    return applied


@dataclass(frozen=True, slots=True)
class UpcomingPrice:
    """A model's price from an announced change on: `price` and `line_multiplier` as they
    will be (the price is a copy, never saved)."""

    effective_at: datetime
    announcement_id: int | None
    price: ModelPrice
    line_multiplier: Decimal


def prices_upcoming(
    *, prices: list[ModelPrice], line: Line | None, now: datetime | None = None
) -> dict[int, list[UpcomingPrice]]:
    """The announced changes not yet applied of these models' prices and of the line's
    multiplier: for each model (by id), its price from each change on, soonest first."""
    now = now or timezone.now()
    targets = Q(model_price__in=[price.pk for price in prices])
    if line is not None:
        targets |= Q(line=line)
    pending = list(
        PriceAdjustment.objects.filter(
            targets, applied_at__isnull=True, announcement__published_at__lte=now
        ).order_by("effective_at", "id")
    )
    if not pending:
        return {}
    upcoming: dict[int, list[UpcomingPrice]] = {}
    for price in prices:
        mine = [a for a in pending if a.model_price_id in (None, price.pk)]
        projected, line_multiplier = copy.copy(price), line.multiplier if line else Decimal(1)
        steps = upcoming.setdefault(price.pk, [])
        for adjustment in mine:
            if adjustment.field == Field.LINE_MULTIPLIER:
                line_multiplier = adjustment.new_value
            else:
                projected = copy.copy(projected)
                setattr(
                    projected, adjustment.field, _stored(adjustment.field, adjustment.new_value)
                )
            step = UpcomingPrice(
                adjustment.effective_at, adjustment.announcement_id, projected, line_multiplier
            )
            if steps and steps[-1].effective_at == adjustment.effective_at:
                steps[-1] = step
            else:
                steps.append(step)
        if not steps:
            del upcoming[price.pk]
    return upcoming


def _attribute(field: str) -> str:
    return "multiplier" if field == Field.LINE_MULTIPLIER else field


def _stored(field: str, value: Decimal) -> Decimal | int:
    return int(value) if field == Field.CALL_PRICE else value


def _price_value(target: ModelPrice | Line, field: str, value: Decimal | int | str) -> Decimal:
    """The new value of a price, checked as its column would: a number, not below zero, a
    multiplier to the millionth, a call's price in whole micro-dollars."""
    if field not in Field.values:
        raise BillingError(f"{field!r} is not a price; prices are {', '.join(Field.values)}.")
    if (field == Field.LINE_MULTIPLIER) != isinstance(target, Line):
        raise BillingError(f"{target} has no {Field(field).label.lower()}.")
    label = Field(field).label
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        raise BillingError(f"{label}: {value!r} is not a number.") from None
    if not number.is_finite() or number < 0:
        raise BillingError(f"{label}: {value!r} must be a number not below zero.")
    if field == Field.CALL_PRICE:
        if number != number.to_integral_value() or number >= MAX_CALL_PRICE:
            raise BillingError(f"{label}: {value!r} is not a whole number of micro-dollars.")
        return Decimal(int(number))
    if number != number.quantize(Decimal("0.000001")) or number >= MAX_MULTIPLIER:
        raise BillingError(
            f"{label}: {value!r} needs at most 6 decimals and must be below {MAX_MULTIPLIER}."
        )
    if field == Field.CACHE_READ_MULTIPLIER and number > 1:
        raise BillingError(f"{label}: a cached read costs at most an input token (at most 1).")
    return number


def _apply_adjustment(adjustment: PriceAdjustment, now: datetime, claimed: bool = False) -> None:
    """Writes an adjustment's new value on its model or line. Its callers apply only what an
    announcement published: price_change once it announced it, price_adjustments_apply_due
    what a public announcement names."""
    target = adjustment.target
    value = _stored(adjustment.field, adjustment.new_value)
    type(target).objects.filter(pk=target.pk).update_announced(
        **{_attribute(adjustment.field): value}
    )
    # The gateway prices from a snapshot: tell it, in every process, once this commits.
    transaction.on_commit(lambda: invalidation.publish(config=True))
    if not claimed:
        PriceAdjustment.objects.filter(pk=adjustment.pk).update(applied_at=now)
    adjustment.applied_at = now
