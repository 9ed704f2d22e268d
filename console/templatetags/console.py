from decimal import Decimal, InvalidOperation

from django import template

from console.lib.money import format_usd

register = template.Library()


@register.filter
def usd(micros):
    """{{ account.balance|usd }} → $12.50"""
    return format_usd(micros)


@register.filter
def usd_exact(micros):
    """{{ log.cost|usd_exact }} → $0.007500"""
    return format_usd(micros, exact=True)


@register.filter
def mult(value):
    """A multiplier without trailing zeros: Decimal("0.500000") → 0.5, Decimal("4.000000") → 4."""
    if value is None or value == "":
        return ""
    try:
        normalized = Decimal(value).normalize()
    except (InvalidOperation, TypeError, ValueError):
        return value
    return format(normalized, "f")


@register.filter
def index(sequence, position):
    """{{ values|index:i }}: the i-th item, or an empty string."""
    try:
        return sequence[int(position)]
    except (IndexError, TypeError, ValueError):
        return ""


@register.filter
def num(value):
    """1234567 → 1,234,567; a lighter intcomma for large tables."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return value
