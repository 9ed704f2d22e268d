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


# No amount of money anyone types is this large: a trillion dollars, whose micro-dollars still
# fit a 64-bit column. Larger numbers ("1e309", thirty digits) are typing mistakes, and would
# not fit the decimal arithmetic either.
MAX_DOLLARS = 10**12
MICRO = Decimal("0.000001")


class AmountError(ValueError):
    """Why a typed amount is not money, in words for the person who typed it. `code` says
    which way: "invalid" (not a number, NaN, Infinity), "too_large" or "too_small" (a
    negative amount beyond MAX_DOLLARS)."""

    def __init__(self, message, code="invalid"):
        super().__init__(message)
        self.code = code


def parse_dollars(value):
    """A dollar amount typed by a person ("20", "$20", "1,000.50", "-2.5") as a Decimal.

    Raises AmountError for what is not a number, not finite (NaN, Infinity) or not below
    MAX_DOLLARS either way.
    """
    try:
        amount = Decimal(str(value).strip().lstrip("$").replace(",", ""))
    except InvalidOperation:
        raise AmountError("Enter an amount in dollars, such as 20.") from None
    if not amount.is_finite():
        raise AmountError("Enter an amount in dollars, such as 20.")
    if amount.copy_abs() >= MAX_DOLLARS:  # copy_abs: no context, so no Overflow
        code = "too_large" if amount > 0 else "too_small"
        raise AmountError(f"Enter an amount between -${MAX_DOLLARS:,} and ${MAX_DOLLARS:,}.", code)
    return amount


def dollars_to_micros(value):
    """Exact conversion of a dollar amount (str, int or Decimal) to micro-dollars, half-up.
    Raises AmountError (a ValueError) as parse_dollars does."""
    amount = parse_dollars(value).quantize(MICRO, rounding=ROUND_HALF_UP)
    return int(amount.scaleb(6))
