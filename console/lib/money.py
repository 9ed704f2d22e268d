"""Money is integer micro-dollars everywhere (1 USD = 1,000,000). These turn it into text."""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICROS_PER_DOLLAR = 1_000_000


def format_usd(micros, *, exact=False):
    """$1,234.50 — two decimals at least, more only where the micro-dollars need them.

    With exact=True all six decimals are shown, as in a cost breakdown.
    """
    if micros is None:
        return ""
    micros = int(micros)
    sign = "-" if micros < 0 else ""
    dollars, fraction = divmod(abs(micros), MICROS_PER_DOLLAR)
    digits = f"{fraction:06d}"
    if not exact:
        digits = digits.rstrip("0").ljust(2, "0")
    return f"{sign}${dollars:,}.{digits}"


def dollars_to_micros(value):
    """Exact conversion of a dollar amount (str, int or Decimal) to micro-dollars, half-up."""
    try:
        amount = Decimal(str(value).strip().lstrip("$").replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not an amount of money") from None
    if not amount.is_finite():
        raise ValueError(f"{value!r} is not an amount of money")
    return int((amount * MICROS_PER_DOLLAR).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def micros_to_decimal(micros):
    return Decimal(int(micros)) / MICROS_PER_DOLLAR
