"""Announcements: publishing one, and the announcement of a set of price adjustments.

Publishing commits the announcement; once committed, a task emails the subscribers of its
kind (see delivery.py).
"""

from collections import defaultdict

from django.db import transaction
from django.utils import timezone

from billing.models import ModelPrice, PriceAdjustment
from billing.pricing import per_million
from console.announcements.delivery import EMAIL_KINDS
from console.announcements.models import Announcement
from console.announcements.tasks import fan_out_announcement
from console.lib.background import enqueue_on_commit
from console.lib.money import format_usd_price as _usd


def announcement_publish(*, announcement, when=None):
    """Publishes a draft (now, or at `when`) and emails the subscribers of its kind."""
    with transaction.atomic():
        first_time = announcement.published_at is None
        announcement.published_at = announcement.published_at or when or timezone.now()
        announcement.save(update_fields=["published_at", "body_html", "updated_at"])
        if first_time and announcement.email_subscribers and announcement.kind in EMAIL_KINDS:
            enqueue_on_commit(fan_out_announcement, announcement.pk)
    return announcement


def price_adjustments_publish(*, adjustments, staff_user, note=""):
    """One announcement for a set of price adjustments: each change with the old and new
    price per million tokens, and when it takes effect.

    billing.services.price_change publishes the adjustments it records (through billing's
    price_adjustments_published signal, answered in signals.py); this publishes those left
    unannounced. Adjustments that one announcement published already answer that
    announcement, and are not announced twice."""
    adjustments = list(
        PriceAdjustment.objects.filter(pk__in=[a.pk for a in adjustments])
        .select_related("model_price", "line", "announcement")
        .order_by("effective_at", "id")
    )
    announced = {a.announcement for a in adjustments if a.announcement_id}
    adjustments = [a for a in adjustments if a.announcement_id is None]
    if not adjustments and len(announced) == 1:
        return announced.pop()
    if not adjustments:
        raise ValueError("no adjustments to publish")
    body = _price_body(adjustments, note)
    names = sorted({str(a.target) for a in adjustments})
    title = (
        "Price change: "
        + ", ".join(names[:3])
        + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    )
    with transaction.atomic():
        announcement = Announcement.objects.create(
            title=title[:200], kind=Announcement.Kind.PRICE, body=body, created_by=staff_user
        )
        PriceAdjustment.objects.filter(pk__in=[a.pk for a in adjustments]).update(
            announcement=announcement
        )
        announcement_publish(announcement=announcement)
    return announcement


def _price_body(adjustments, note):
    by_model, by_line = defaultdict(dict), defaultdict(dict)
    for adjustment in adjustments:
        target = (
            by_model[adjustment.model_price] if adjustment.model_price else by_line[adjustment.line]
        )
        target[adjustment.field] = adjustment
    when = min(a.effective_at for a in adjustments)
    local = timezone.localtime(when)
    text = []
    if note:
        text += [note.strip(), ""]
    text.append(
        f"These prices change on **{local:%Y-%m-%d %H:%M} ({local.tzname()})**"
        + ("." if when > timezone.now() else ", and apply from then.")
    )
    text.append("")
    if by_model:
        text += ["| Model | Change | Input per 1M tokens | Output per 1M tokens |",
                 "|---|---|---|---|"]  # fmt: skip
        for price, changes in sorted(by_model.items(), key=lambda item: item[0].model):
            text.append(_model_row(price, changes))
        text.append("")
    for line, changes in sorted(by_line.items(), key=lambda item: item[0].name):
        change = changes[PriceAdjustment.Field.LINE_MULTIPLIER]
        text.append(
            f"- Line **{line.name}**: line multiplier {_num(change.old_value)} → "
            f"{_num(change.new_value)}; every price on the line changes by that factor."
        )
    text += ["", "Your request log keeps the multipliers each request was charged with."]
    return "\n".join(text)


def _model_row(price, changes):
    Field = PriceAdjustment.Field

    def values(which):
        def value(field, current):
            change = changes.get(field)
            return getattr(change, which) if change else current

        return (
            value(Field.MODEL_MULTIPLIER, price.model_multiplier),
            value(Field.COMPLETION_MULTIPLIER, price.completion_multiplier),
            value(Field.CALL_PRICE, price.call_price),
        )

    old_mm, old_cm, old_call = values("old_value")
    new_mm, new_cm, new_call = values("new_value")
    described = "; ".join(
        f"{change.get_field_display().lower()} {_num(change.old_value, change.field)} → "
        f"{_num(change.new_value, change.field)}"
        + _part_prices(change, (old_mm, old_cm), (new_mm, new_cm))
        for change in changes.values()
    )
    if price.pricing == ModelPrice.Pricing.PER_CALL:
        per_call = f"{_usd(int(old_call))} → {_usd(int(new_call))} per call"
        return f"| {price.model} | {described} | {per_call} | |"
    old_in, new_in = per_million(old_mm), per_million(new_mm)
    old_out, new_out = per_million(old_mm * old_cm), per_million(new_mm * new_cm)
    return (
        f"| {price.model} | {described} | {_usd(old_in)} → {_usd(new_in)} | "
        f"{_usd(old_out)} → {_usd(new_out)} |"
    )


# The multipliers of a part of the usage, with what the part is and whether it is output.
PART_FIELDS = {
    PriceAdjustment.Field.CACHE_READ_MULTIPLIER: ("cached input", False),
    PriceAdjustment.Field.CACHE_WRITE_5M_MULTIPLIER: ("cache writes (5 min)", False),
    PriceAdjustment.Field.CACHE_WRITE_1H_MULTIPLIER: ("cache writes (1 h)", False),
    PriceAdjustment.Field.AUDIO_INPUT_MULTIPLIER: ("audio input", False),
    PriceAdjustment.Field.AUDIO_OUTPUT_MULTIPLIER: ("audio output", True),
}


def _part_prices(change, old, new):
    """For a part's multiplier, what a million of those tokens cost before and after."""
    if change.field not in PART_FIELDS:
        return ""
    what, output = PART_FIELDS[change.field]

    def price(multipliers, rate):
        model, completion = multipliers
        return _usd(per_million(model * (completion if output else 1) * rate))

    return (
        f" ({what} {price(old, change.old_value)} → {price(new, change.new_value)} per 1M tokens)"
    )


def _num(value, field=None):
    if field == PriceAdjustment.Field.CALL_PRICE:
        return _usd(int(value))
    return format(value.normalize(), "f")
