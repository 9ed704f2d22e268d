"""The cost of a request, in exact arithmetic. Pure functions: no database, no settings.

    cost = (prompt_tokens + completion_tokens × completion_multiplier)
           × model_multiplier × line_multiplier × base_price

base_price is $0.002 per 1,000 tokens, i.e. 2 micro-dollars per token. The result is rounded
half-up to the micro-dollar. Models priced per call cost call_price × line_multiplier.

The arithmetic is done on integers: each decimal multiplier is an exact fraction, so the cost
is one fraction N / D, rounded once. Exact, and fast enough for the gateway's hot path.
"""

from dataclasses import dataclass
from decimal import Decimal

# A multiplier: a Decimal (as the database keeps it) or a whole number; never a float.
Multiplier = Decimal | int

BASE_PRICE_PER_1K_TOKENS = Decimal("0.002")  # dollars
MICROS_PER_TOKEN = 2  # $0.002 / 1,000 tokens = 2 micro-dollars per token


def _ratio(value: Multiplier) -> tuple[int, int]:
    return Decimal(value).as_integer_ratio()


def _round_half_up(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (2 * remainder >= denominator)


def _token_fraction(
    prompt: int,
    completion: int,
    model_multiplier: Multiplier,
    completion_multiplier: Multiplier,
    line_multiplier: Multiplier,
) -> tuple[int, int]:
    cn, cd = _ratio(completion_multiplier)
    mn, md = _ratio(model_multiplier)
    ln, ld = _ratio(line_multiplier)
    return (prompt * cd + completion * cn) * mn * ln * MICROS_PER_TOKEN, cd * md * ld


def _call_fraction(call_price: int, line_multiplier: Multiplier) -> tuple[int, int]:
    ln, ld = _ratio(line_multiplier)
    return call_price * ln, ld


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """Every factor of a charge, so that a page can show how the figure came about."""

    prompt_tokens: int
    completion_tokens: int
    model_multiplier: Decimal
    completion_multiplier: Decimal
    line_multiplier: Decimal
    call_price: int  # micro-dollars; 0 unless per_call
    per_call: bool
    cost: int  # micro-dollars, rounded half-up

    @property
    def weighted_tokens(self) -> Decimal:
        """Prompt tokens plus completion tokens at the completion multiplier."""
        return Decimal(self.prompt_tokens) + Decimal(self.completion_tokens) * (
            self.completion_multiplier
        )

    @property
    def exact_cost(self) -> Decimal:
        """The unrounded cost in micro-dollars."""
        if self.per_call:
            numerator, denominator = _call_fraction(self.call_price, self.line_multiplier)
        else:
            numerator, denominator = _token_fraction(
                self.prompt_tokens,
                self.completion_tokens,
                self.model_multiplier,
                self.completion_multiplier,
                self.line_multiplier,
            )
        return Decimal(numerator) / Decimal(denominator)


def token_cost(
    *,
    prompt_tokens: int,
    completion_tokens: int,
    model_multiplier: Multiplier,
    completion_multiplier: Multiplier,
    line_multiplier: Multiplier,
) -> CostBreakdown:
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts cannot be negative")
    prompt_tokens, completion_tokens = int(prompt_tokens), int(completion_tokens)
    numerator, denominator = _token_fraction(
        prompt_tokens, completion_tokens, model_multiplier, completion_multiplier, line_multiplier
    )
    return CostBreakdown(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        model_multiplier=Decimal(model_multiplier),
        completion_multiplier=Decimal(completion_multiplier),
        line_multiplier=Decimal(line_multiplier),
        call_price=0,
        per_call=False,
        cost=_round_half_up(numerator, denominator),
    )


def call_cost(
    *,
    call_price: int,
    line_multiplier: Multiplier,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> CostBreakdown:
    if call_price < 0:
        raise ValueError("a call price cannot be negative")
    numerator, denominator = _call_fraction(int(call_price), line_multiplier)
    return CostBreakdown(
        prompt_tokens=int(prompt_tokens),
        completion_tokens=int(completion_tokens),
        model_multiplier=Decimal(1),
        completion_multiplier=Decimal(1),
        line_multiplier=Decimal(line_multiplier),
        call_price=int(call_price),
        per_call=True,
        cost=_round_half_up(numerator, denominator),
    )


def token_cost_ceiling(
    prompt_tokens: int,
    completion_tokens: int,
    model_multiplier: Multiplier,
    completion_multiplier: Multiplier,
    line_multiplier: Multiplier,
) -> int:
    """The cost rounded up, in micro-dollars: what to hold before a request is served."""
    numerator, denominator = _token_fraction(
        prompt_tokens, completion_tokens, model_multiplier, completion_multiplier, line_multiplier
    )
    return -(-numerator // denominator)


def call_cost_ceiling(call_price: int, line_multiplier: Multiplier) -> int:
    numerator, denominator = _call_fraction(call_price, line_multiplier)
    return -(-numerator // denominator)


def per_million(multiplier: Multiplier) -> int:
    """Micro-dollars for one million tokens at this combined multiplier."""
    numerator, denominator = _ratio(multiplier)
    return _round_half_up(numerator * MICROS_PER_TOKEN * 1_000_000, denominator)
