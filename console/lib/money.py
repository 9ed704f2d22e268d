"""Money is integer micro-dollars everywhere (1 USD = 1,000,000). These turn it into text.

One rule says how many decimals a sum of money shows, by what it is:

- **An amount** — a balance, a recharge, a bonus, an order, a refund, a limit or threshold, a
  total of spend over a day or a month — shows whole cents: `format_usd`, `{{ x|usd }}`,
  "$1,234.50". Cents are cut, never rounded up: a balance of $0.008 is not a cent that can be
  spent, and a total shown never claims more than was charged. An amount that is not zero but
  under a cent reads "<$0.01", so that money which is there never reads as nothing.
- **A cost** — what one request cost, and the balance history that settles those costs — shows
  every micro-dollar, six decimals always: `format_usd_cost`, `{{ x|usd_cost }}`, "$0.007500",
  "$0.000000". A column of costs lines up, and no cost looks like a round cent.
- **A price** — what a unit costs: per 1M tokens, or per call — shows as many decimals as it
  has, from two up to six: `format_usd_price`, `{{ x|usd_price }}`, "$2.50", "$0.075". A
  sentence that must quote a sum exactly (a refusal: "the available balance ($0.003) does not
  cover $0.0045") uses this form too: exact, and no longer than it needs.

`format_dollars_plain` is for what is read back, not by people: a form's initial value, a CSV
cell. It keeps every micro-dollar and has no "$" or thousands separators.
"""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICROS_PER_DOLLAR = 1_000_000
MICROS_PER_CENT = 10_000


def _split(micros: int) -> tuple[str, int, int]:
    """The sign, whole dollars and the micro-dollars beyond them."""
    sign = "-" if micros < 0 else ""
    dollars, fraction = divmod(abs(micros), MICROS_PER_DOLLAR)
    return sign, dollars, fraction


def format_usd(micros: int | None) -> str:
    """An amount, in whole cents cut toward zero: $1,234.50; "<$0.01" for less than a cent."""
    if micros is None:
        return ""
    micros = int(micros)
    sign, dollars, fraction = _split(micros)
    if micros and not dollars and fraction < MICROS_PER_CENT:
        return f"{sign}<$0.01"
    return f"{sign}${dollars:,}.{fraction // MICROS_PER_CENT:02d}"


def format_usd_cost(micros: int | None) -> str:
    """A cost, to the micro-dollar: $0.007500."""
    if micros is None:
        return ""
    sign, dollars, fraction = _split(int(micros))
    return f"{sign}${dollars:,}.{fraction:06d}"


def format_usd_price(micros: int | None) -> str:
    """A price per unit, or a sum quoted exactly in words: two to six decimals as it needs,
    $2.50, $0.075, $0.000375."""
    if micros is None:
        return ""
    sign, dollars, fraction = _split(int(micros))
    return f"{sign}${dollars:,}.{f'{fraction:06d}'.rstrip('0').ljust(2, '0')}"


def format_dollars_plain(micros: int | None) -> str:
    """Every micro-dollar, for a form field or a CSV: 1234.50, 0.000375, -2.00 (no "$", no
    thousands separators)."""
    if micros is None:
        return ""
    sign, dollars, fraction = _split(int(micros))
    return f"{sign}{dollars}.{f'{fraction:06d}'.rstrip('0').ljust(2, '0')}"


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
