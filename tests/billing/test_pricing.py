from decimal import Decimal

import pytest

from billing.pricing import call_cost, per_million, token_cost


def test_the_worked_example_of_the_help_center_costs_seven_and_a_half_thousandths():
    breakdown = token_cost(
        prompt_tokens=1_000,
        completion_tokens=500,
        model_multiplier=Decimal("1.25"),
        completion_multiplier=Decimal(4),
        line_multiplier=Decimal(1),
    )
    assert breakdown.cost == 7_500  # $0.007500
    assert breakdown.weighted_tokens == 3_000
    assert breakdown.exact_cost == Decimal("7500.00")


def test_multiplier_one_is_two_dollars_per_million_prompt_tokens():
    breakdown = token_cost(
        prompt_tokens=1_000_000,
        completion_tokens=0,
        model_multiplier=1,
        completion_multiplier=1,
        line_multiplier=1,
    )
    assert breakdown.cost == 2_000_000


def test_the_line_multiplier_scales_the_whole_price():
    base = dict(
        prompt_tokens=10,
        completion_tokens=20,
        model_multiplier=Decimal("0.075"),
        completion_multiplier=Decimal(4),
    )
    assert token_cost(**base, line_multiplier=Decimal("1.5")).exact_cost == (
        token_cost(**base, line_multiplier=1).exact_cost * Decimal("1.5")
    )


def test_zero_tokens_cost_nothing():
    breakdown = token_cost(
        prompt_tokens=0,
        completion_tokens=0,
        model_multiplier=5,
        completion_multiplier=3,
        line_multiplier=2,
    )
    assert breakdown.cost == 0


def test_huge_counts_stay_exact():
    breakdown = token_cost(
        prompt_tokens=10**12,
        completion_tokens=10**12,
        model_multiplier=Decimal("0.000001"),
        completion_multiplier=Decimal("3"),
        line_multiplier=Decimal("1.1"),
    )
    # (1e12 + 3e12) × 0.000001 × 1.1 × 2 = 8,800,000 micro-dollars
    assert breakdown.cost == 8_800_000


def test_it_rounds_half_up_to_the_micro_dollar():
    # One token at multiplier 0.25 costs exactly 0.5 micro-dollars: half rounds up.
    half = token_cost(
        prompt_tokens=1,
        completion_tokens=0,
        model_multiplier=Decimal("0.25"),
        completion_multiplier=1,
        line_multiplier=1,
    )
    assert half.exact_cost == Decimal("0.5")
    assert half.cost == 1
    below = token_cost(
        prompt_tokens=1,
        completion_tokens=0,
        model_multiplier=Decimal("0.2"),
        completion_multiplier=1,
        line_multiplier=1,
    )
    assert below.cost == 0


def test_per_call_models_cost_the_call_price_times_the_line_multiplier():
    breakdown = call_cost(call_price=40_000, line_multiplier=Decimal("1.5"))
    assert breakdown.per_call
    assert breakdown.cost == 60_000


def test_negative_counts_are_refused():
    with pytest.raises(ValueError):
        token_cost(
            prompt_tokens=-1,
            completion_tokens=0,
            model_multiplier=1,
            completion_multiplier=1,
            line_multiplier=1,
        )
    with pytest.raises(ValueError):
        call_cost(call_price=-1, line_multiplier=1)


def test_price_per_million_tokens():
    assert per_million(Decimal("1.25")) == 2_500_000
    assert per_million(Decimal("0.075") * 4) == 600_000


def test_every_multiplier_costs_its_own_price_however_often_and_however_written():
    # The multipliers' fractions are worked out once and remembered: a remembered fraction must
    # be that of the very multiplier asked, in any of its spellings, before and after others
    # have pushed it out of memory.
    from decimal import ROUND_HALF_UP, localcontext

    def expected(model):
        with localcontext(prec=60):
            exact = (Decimal(1_234) + Decimal(567) * 3) * Decimal(model) * Decimal("0.85") * 2
            return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))

    def cost(model):
        return token_cost(
            prompt_tokens=1_234,
            completion_tokens=567,
            model_multiplier=model,
            completion_multiplier=3,
            line_multiplier=Decimal("0.85"),
        ).cost

    many = [Decimal(n) / 1000 for n in range(1, 1_500)]  # more than are remembered
    for _ in range(2):
        assert [cost(m) for m in many] == [expected(m) for m in many]
    for spellings in ([2, Decimal(2), Decimal("2.000")], [Decimal("1.1"), Decimal("1.10")]):
        assert {cost(m) for m in spellings} == {expected(spellings[0])}
