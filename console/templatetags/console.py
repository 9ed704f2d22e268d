from decimal import Decimal, InvalidOperation

from django import template

from console.lib.money import format_usd, format_usd_cost, format_usd_price

register = template.Library()

# Which filter a sum of money takes is said once, in console.lib.money: amounts in cents,
# costs to the micro-dollar, prices with the decimals they have.


@register.filter
def usd(micros):
    """An amount (balance, recharge, order, total): {{ account.balance|usd }} → $12.50"""
    return format_usd(micros)


@register.filter
def usd_cost(micros):
    """What a request cost, or a ledger entry: {{ log.cost|usd_cost }} → $0.007500"""
    return format_usd_cost(micros)


@register.filter
def usd_price(micros):
    """A price per 1M tokens or per call: {{ row.input|usd_price }} → $2.50, $0.075"""
    return format_usd_price(micros)


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
