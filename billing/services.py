"""Every workflow that moves money. Each runs in one transaction and writes its ledger rows.

Balances are changed with guarded updates (`balance - held >= amount`), so concurrent debits
can never take a balance below zero, and every change writes a LedgerEntry with the balance
after it, so the ledger of an account always sums to its balance.
"""

import csv
import hashlib
import hmac
import io
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.alerts import low_balance_check, low_balance_reset
from billing.models import (
    Account,
    BonusTier,
    Group,
    LedgerEntry,
    ModelPrice,
    OrderAction,
    PaymentEvent,
    PriceAdjustment,
    RechargeOrder,
    RedemptionBatch,
    RedemptionCode,
)
from console.lib import invalidation
from console.lib.money import format_usd
from console.lib.ratelimit import limit_reached

log = logging.getLogger(__name__)

Kind = LedgerEntry.Kind
Status = RechargeOrder.Status


class BillingError(Exception):
    """A refusal with a message a person can act on."""


class InsufficientBalance(BillingError):
    pass


class OrderStateError(BillingError):
    pass


class RefundRefused(BillingError):
    pass


class RedemptionRefused(BillingError):
    pass


# Balance and ledger


def account_for(user):
    return Account.objects.get_or_create(user=user)[0]


def _write_entry(account_id, amount, kind, **cause):
    balance_after = Account.objects.values_list("balance", flat=True).get(pk=account_id)
    return LedgerEntry.objects.create(
        account_id=account_id, kind=kind, amount=amount, balance_after=balance_after, **cause
    )


def balance_credit(*, user, amount, kind, **cause):
    """Adds money to a balance. `cause` names the order, code, staff user and reason."""
    if amount <= 0:
        raise ValueError("a credit must be positive")
    with transaction.atomic():
        account = account_for(user)
        Account.objects.filter(pk=account.pk).update(balance=F("balance") + amount)
        # A gateway that just refused this user for want of money must look again.
        transaction.on_commit(lambda: invalidation.publish(users=[account.pk]))
        entry = _write_entry(account.pk, amount, kind, **cause)
        low_balance_reset(account.pk)
        return entry


def balance_charge(*, user, amount, kind, **cause):
    """Takes money from the available balance, or raises InsufficientBalance."""
    if amount <= 0:
        raise ValueError("a charge must be positive")
    with transaction.atomic():
        account = account_for(user)
        taken = Account.objects.filter(pk=account.pk, balance__gte=F("held") + amount).update(
            balance=F("balance") - amount
        )
        if not taken:
            available = Account.objects.values_list("balance", "held").get(pk=account.pk)
            raise InsufficientBalance(
                f"The available balance ({format_usd(available[0] - available[1])}) "
                f"does not cover {format_usd(amount)}."
            )
        entry = _write_entry(account.pk, -amount, kind, **cause)
        low_balance_check([account.pk])
        return entry


def balance_adjust(*, user, amount, staff_user, reason):
    """A staff correction of a balance, up or down, with the reason in the ledger."""
    if not reason.strip():
        raise BillingError("Give a reason: it is kept in the ledger.")
    if amount == 0:
        raise BillingError("The amount cannot be zero.")
    cause = {"staff_user": staff_user, "reason": reason.strip()}
    if amount > 0:
        return balance_credit(user=user, amount=amount, kind=Kind.ADJUSTMENT, **cause)
    return balance_charge(user=user, amount=-amount, kind=Kind.ADJUSTMENT, **cause)


def spend_between(user, start, end):
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
    def to_next(self):
        return max(self.next.threshold - self.total_recharged, 0) if self.next else None


def tier_status(user):
    total = account_for(user).total_recharged
    tiers = list(BonusTier.objects.all())
    current = next((t for t in reversed(tiers) if t.threshold <= total), None)
    upcoming = next((t for t in tiers if t.threshold > total), None)
    return TierStatus(total_recharged=total, current=current, next=upcoming)


def bonus_for(user, amount):
    """The bonus a recharge of `amount` earns: the tier reached with this recharge counted."""
    reached = account_for(user).total_recharged + amount
    tier = BonusTier.objects.filter(threshold__lte=reached).order_by("-threshold").first()
    if tier is None or tier.percent <= 0:
        return 0, None
    bonus = (Decimal(amount) * tier.percent / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(bonus), tier


# Recharge orders


def order_create(*, user, amount, provider):
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


def order_credit(*, order, staff_user=None, reason="", payment_reference=""):
    """Credits an order's amount and bonus, exactly once. Returns False if already done."""
    if staff_user is not None and not reason.strip():
        raise BillingError("Give a reason for crediting by hand.")
    now = timezone.now()
    with transaction.atomic():
        changes = {
            "status": Status.CREDITED,
            "credited_at": now,
            "paid_at": Coalesce("paid_at", now),
        }
        if payment_reference:
            changes["payment_reference"] = payment_reference
        moved = (
            RechargeOrder.objects.filter(pk=order.pk)
            .exclude(status__in=[Status.CREDITED, Status.REFUNDED])
            .update(**changes)
        )
        if not moved:
            return False
        cause = {"order": order}
        if staff_user is not None:
            cause.update(staff_user=staff_user, reason=reason.strip())
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


def order_mark_failed(*, order, reason, staff_user=None):
    if staff_user is not None and not reason.strip():
        raise BillingError("Give a reason for marking the order failed.")
    with transaction.atomic():
        moved = RechargeOrder.objects.filter(
            pk=order.pk, status__in=[Status.PENDING, Status.EXPIRED]
        ).update(status=Status.FAILED, failed_at=timezone.now(), failure_reason=reason[:500])
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


def order_expire(*, order):
    moved = RechargeOrder.objects.filter(pk=order.pk, status=Status.PENDING).update(
        status=Status.EXPIRED, expired_at=timezone.now()
    )
    return bool(moved)


def order_refund(*, order, staff_user, reason, force=False):
    """Takes a credited order's amount and bonus back, and refunds it at the provider.

    Refuses when the available balance is below what was credited, unless forced: then only
    what is available is taken back, and the shortfall is recorded.
    """
    from billing.providers import get_provider

    if not reason.strip():
        raise BillingError("Give a reason for the refund.")
    with transaction.atomic():
        locked = RechargeOrder.objects.select_for_update().get(pk=order.pk)
        if locked.status != Status.CREDITED:
            raise OrderStateError(
                f"Order {locked.number} is {locked.get_status_display().lower()}; "
                "only a credited order can be refunded."
            )
        account = Account.objects.select_for_update().get(user=locked.user)
        take_back = locked.total
        if account.available < take_back:
            if not force:
                raise RefundRefused(
                    f"The user's available balance is {format_usd(account.available)}, "
                    f"below the {format_usd(take_back)} this order credited. "
                    "Refund anyway with “force” and a reason; the balance will go to zero."
                )
            take_back = account.available
        detail = ""
        if take_back < locked.total:
            detail = f"Took back {format_usd(take_back)} of {format_usd(locked.total)} (forced)."
        if take_back > 0:
            balance_charge(
                user=locked.user,
                amount=take_back,
                kind=Kind.REFUND,
                order=locked,
                staff_user=staff_user,
                reason=reason.strip(),
            )
        RechargeOrder.objects.filter(pk=locked.pk).update(
            status=Status.REFUNDED, refunded_at=timezone.now(), refunded_amount=take_back
        )
        Account.objects.filter(pk=account.pk).update(
            total_recharged=F("total_recharged") - locked.amount
        )
        OrderAction.objects.create(
            order=locked,
            action=OrderAction.Action.REFUND,
            staff_user=staff_user,
            reason=reason.strip(),
            detail=detail,
        )
        # Last, so that a refusal by the provider undoes everything above.
        get_provider(locked.provider).refund(locked)
    order.refresh_from_db()


# Payment callbacks


def payment_event_reject(*, provider, detail, source):
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


def payment_event_handle(*, provider, update):
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
        if replays.count() >= REPLAYS_RECORDED:
            return replays.first()
        event = PaymentEvent.objects.create(
            **record,
            outcome=Outcome.REPLAY,
            order=first.order if first else None,
            detail="Already processed.",
        )
    if event.outcome in {Outcome.UNKNOWN_ORDER, Outcome.AMOUNT_MISMATCH}:
        log.warning("%s payment event %s: %s", provider, update.event_id, event.detail)
    return event


def _apply_update(provider, update):
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
                f"Paid {format_usd(update.amount or 0)} for an order of "
                f"{format_usd(order.amount)}; not credited. Check with the provider.",
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


def orders_reconcile(*, now=None, dry_run=False):
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


def _code_hash(code, secret=None):
    normalized = code.strip().upper().replace(" ", "")
    secret = secret or settings.SECRET_KEY
    return hmac.new(secret.encode(), normalized.encode(), hashlib.sha256).hexdigest()


def _code_hashes(code):
    """Its hash under SECRET_KEY and the keys it replaced: a rotation keeps codes redeemable."""
    return [
        _code_hash(code, secret) for secret in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)
    ]


def redemption_batch_create(*, name, amount, count, expires_at, staff_user):
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
                format_usd(amount).lstrip("$"),
                name,
                expires_at.isoformat() if expires_at else "",
            ]
        )
    return batch, out.getvalue()


def code_redeem(*, user, code):
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


def price_change(*, target, new_values, reason, staff_user, effective_at=None, batch=None):
    """Records the changes of a model's or a line's prices and applies those due now.

    `target` is a ModelPrice or a Group; `new_values` maps PriceAdjustment.Field values to the
    new numbers. Unchanged values are skipped. Returns the adjustments written.
    """
    now = timezone.now()
    effective_at = effective_at or now
    batch = batch or PriceAdjustment.new_batch()
    if not reason.strip():
        raise BillingError("Give a reason for the price change; it is published.")
    adjustments = []
    with transaction.atomic():
        for field, new_value in new_values.items():
            old_value = getattr(target, _attribute(field))
            if Decimal(old_value) == Decimal(new_value):
                continue
            adjustments.append(
                PriceAdjustment.objects.create(
                    model_price=target if isinstance(target, ModelPrice) else None,
                    group=target if isinstance(target, Group) else None,
                    field=field,
                    old_value=old_value,
                    new_value=new_value,
                    effective_at=effective_at,
                    reason=reason.strip(),
                    batch=batch,
                    staff_user=staff_user,
                )
            )
        if effective_at <= now:
            for adjustment in adjustments:
                _apply_adjustment(adjustment, now)
    return adjustments


def price_adjustments_apply_due(*, now=None, dry_run=False):
    """Applies scheduled adjustments whose time has come. Safe to run again."""
    now = now or timezone.now()
    due = PriceAdjustment.objects.filter(applied_at__isnull=True, effective_at__lte=now)
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


def _attribute(field):
    return "multiplier" if field == PriceAdjustment.Field.GROUP_MULTIPLIER else field


def _apply_adjustment(adjustment, now, claimed=False):
    target = adjustment.target
    value = adjustment.new_value
    if adjustment.field == PriceAdjustment.Field.CALL_PRICE:
        value = int(value)
    type(target).objects.filter(pk=target.pk).update(**{_attribute(adjustment.field): value})
    # The gateway prices from a snapshot: tell it, in every process, once this commits.
    transaction.on_commit(lambda: invalidation.publish(config=True))
    if not claimed:
        PriceAdjustment.objects.filter(pk=adjustment.pk).update(applied_at=now)
