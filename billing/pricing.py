"""The cost of a request, in exact arithmetic. Pure functions: no database, no settings.

    cost = (prompt_tokens + completion_tokens × completion_multiplier)
           × model_multiplier × group_multiplier × base_price

base_price is $0.002 per 1,000 tokens, i.e. 2 micro-dollars per token. The result is rounded
half-up to the micro-dollar. Models priced per call cost call_price × group_multiplier.
"""

from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal

BASE_PRICE_PER_1K_TOKENS = Decimal("0.002")  # dollars
MICROS_PER_TOKEN = Decimal(2)  # $0.002 / 1,000 tokens = 2 micro-dollars per token
_ONE = Decimal(1)


@dataclass(frozen=True)
class CostBreakdown:
    """Every factor of a charge, so that a page can show how the figure came about."""

    prompt_tokens: int
    completion_tokens: int
    model_multiplier: Decimal
    completion_multiplier: Decimal
    group_multiplier: Decimal
    call_price: int  # micro-dollars; 0 unless per_call
    per_call: bool
    cost: int  # micro-dollars, rounded half-up

    @property
    def weighted_tokens(self):
        """Prompt tokens plus completion tokens at the completion multiplier."""
        return Decimal(self.prompt_tokens) + Decimal(self.completion_tokens) * (
            self.completion_multiplier
        )

    @property
    def exact_cost(self):
        """The unrounded cost in micro-dollars."""
        if self.per_call:
            return Decimal(self.call_price) * self.group_multiplier
        return (
            self.weighted_tokens
            * self.model_multiplier
            * self.group_multiplier
            * (MICROS_PER_TOKEN)
        )


def token_cost(
    *,
    prompt_tokens,
    completion_tokens,
    model_multiplier,
    completion_multiplier,
    group_multiplier,
):
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts cannot be negative")
    breakdown = CostBreakdown(
        prompt_tokens=int(prompt_tokens),
        completion_tokens=int(completion_tokens),
        model_multiplier=Decimal(model_multiplier),
        completion_multiplier=Decimal(completion_multiplier),
        group_multiplier=Decimal(group_multiplier),
        call_price=0,
        per_call=False,
        cost=0,
    )
    return _rounded(breakdown)


def call_cost(*, call_price, group_multiplier, prompt_tokens=0, completion_tokens=0):
    if call_price < 0:
        raise ValueError("a call price cannot be negative")
    breakdown = CostBreakdown(
        prompt_tokens=int(prompt_tokens),
        completion_tokens=int(completion_tokens),
        model_multiplier=_ONE,
        completion_multiplier=_ONE,
        group_multiplier=Decimal(group_multiplier),
        call_price=int(call_price),
        per_call=True,
        cost=0,
    )
    return _rounded(breakdown)


def _rounded(breakdown):
    cost = int(breakdown.exact_cost.quantize(_ONE, rounding=ROUND_HALF_UP))
    return replace(breakdown, cost=cost)


def per_million(multiplier):
    """Micro-dollars for one million tokens at this combined multiplier."""
    return int(
        (Decimal(multiplier) * MICROS_PER_TOKEN * 1_000_000).quantize(_ONE, rounding=ROUND_HALF_UP)
    )
