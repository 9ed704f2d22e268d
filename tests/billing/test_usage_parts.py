"""The cost of a usage's parts (cache reads and writes, audio): exact, never negative, monotonic
in every count, a cached token never dearer than an uncached one, and the breakdown's parts
adding up to what is charged."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.pricing import Rates, Tokens, token_cost, token_cost_ceiling
from tests.fuzzing import fuzz_settings

counts = st.integers(min_value=0, max_value=2_000_000)
multipliers = st.decimals(min_value=0, max_value=50, places=6, allow_nan=False)
cache_reads = st.decimals(min_value=0, max_value=1, places=6, allow_nan=False)
PARTS = ("cache_read", "cache_write_5m", "cache_write_1h", "audio_input")


@st.composite
def usages(draw):
    """Tokens as a channel reports them: parts within their totals."""
    parts = {name: draw(counts) for name in PARTS}
    prompt = sum(parts.values()) + draw(counts)
    audio_output = draw(counts)
    completion = audio_output + draw(counts)
    return Tokens(prompt, completion, **parts, audio_output=audio_output)


@st.composite
def price_rates(draw):
    return Rates(
        completion=draw(multipliers),
        cache_read=draw(cache_reads),
        cache_write_5m=draw(multipliers),
        cache_write_1h=draw(multipliers),
        audio_input=draw(multipliers),
        audio_output=draw(multipliers),
    )


def cost(tokens, rates, model=Decimal("1.5"), line=Decimal("1.2")):
    return token_cost(
        prompt_tokens=tokens.prompt,
        completion_tokens=tokens.completion,
        model_multiplier=model,
        completion_multiplier=rates.completion,
        line_multiplier=line,
        parts=tokens,
        rates=rates,
    )


def with_more(tokens, name, more):
    """The same usage with `more` tokens of one part (its total grows with it)."""
    fields = {n: getattr(tokens, n) for n in (*PARTS, "audio_output", "reasoning")}
    fields[name] += more
    prompt = tokens.prompt + (more if name in PARTS else 0)
    completion = tokens.completion + (more if name == "audio_output" else 0)
    return Tokens(prompt, completion, **fields)


@fuzz_settings(300)
@given(usages(), price_rates())
def test_the_parts_add_up_to_the_charge_and_none_is_negative(tokens, rates):
    breakdown = cost(tokens, rates)
    assert breakdown.cost >= 0
    parts = breakdown.parts()
    assert all(count >= 0 and weighted >= 0 for _what, count, _rate, weighted in parts)
    assert sum(weighted for *_rest, weighted in parts) == breakdown.weighted_tokens
    exact = breakdown.weighted_tokens * Decimal("1.5") * Decimal("1.2") * 2
    assert breakdown.exact_cost == exact
    assert abs(breakdown.cost - exact) <= Decimal("0.5")
    # The inputs' parts and the uncached rest are the prompt; the outputs the completion.
    assert sum(count for what, count, *_ in parts if "utput" not in what) == tokens.prompt
    assert sum(count for what, count, *_ in parts if "utput" in what) == tokens.completion


@fuzz_settings(300)
@given(
    usages(),
    price_rates(),
    st.sampled_from(["uncached", *PARTS, "text_output", "audio_output"]),
    st.integers(1, 100_000),
)
def test_the_cost_never_falls_when_any_count_grows(tokens, rates, part, more):
    if part == "uncached":
        grown = Tokens(tokens.prompt + more, tokens.completion, *_parts_of(tokens))
    elif part == "text_output":
        grown = Tokens(tokens.prompt, tokens.completion + more, *_parts_of(tokens))
    else:
        grown = with_more(tokens, part, more)
    assert cost(grown, rates).exact_cost >= cost(tokens, rates).exact_cost


def _parts_of(tokens):
    return [getattr(tokens, name) for name in (*PARTS, "audio_output", "reasoning")]


@fuzz_settings(300)
@given(usages(), price_rates(), st.integers(0, 2_000_000))
def test_a_cached_token_is_never_dearer_than_an_uncached_one(tokens, rates, moved):
    """The same prompt, with some of its uncached tokens read from the cache instead."""
    moved = min(moved, tokens.uncached_input)
    fields = dict(zip((*PARTS, "audio_output", "reasoning"), _parts_of(tokens), strict=True))
    fields["cache_read"] += moved
    cached = Tokens(tokens.prompt, tokens.completion, **fields)
    assert cost(cached, rates).exact_cost <= cost(tokens, rates).exact_cost


@fuzz_settings(300)
@given(usages(), price_rates())
def test_the_hold_for_the_totals_covers_any_split_into_parts(tokens, rates):
    """Money is held before the parts are known: at the dearest rates, whatever they turn out."""
    held = token_cost_ceiling(
        tokens.prompt, tokens.completion, Decimal("1.5"), Decimal("1.2"), rates
    )
    assert held >= cost(tokens, rates).exact_cost


def test_without_parts_the_cost_is_the_published_formula():
    plain = token_cost(
        prompt_tokens=1_000,
        completion_tokens=500,
        model_multiplier=Decimal("1.25"),
        completion_multiplier=Decimal(4),
        line_multiplier=Decimal(1),
        rates=Rates(4, Decimal("0.1"), Decimal("1.25"), 2, 16, 8),
    )
    assert plain.cost == 7_500
    assert not plain.has_components


def test_a_cached_claude_request_worked_by_hand():
    """10,000 prompt tokens: 8,000 read from the cache at 0.1, 1,500 written for 5 minutes at
    1.25, 500 uncached; 200 output at 5; model 1.5 ($3 / 1M input), line 1."""
    tokens = Tokens(10_000, 200, cache_read=8_000, cache_write_5m=1_500)
    breakdown = cost(tokens, Rates(5, Decimal("0.1"), Decimal("1.25"), 2), line=1)
    # 500 + 800 + 1,875 + 1,000 = 4,175 weighted tokens × 1.5 × $0.000002
    assert breakdown.weighted_tokens == 4_175
    assert breakdown.cost == 12_525
    # At the full input price it would have cost (10,000 + 1,000) × 1.5 × 2 = 33,000.
    assert [row[:2] for row in breakdown.parts()] == [
        ("Input", 500),
        ("Cached input read", 8_000),
        ("Cache write (5 min)", 1_500),
        ("Output", 200),
    ]


def test_parts_beyond_their_total_are_cut_to_it():
    tokens = Tokens(100, 10, cache_read=80, cache_write_5m=50, audio_output=20, reasoning=30)
    assert (tokens.cache_read, tokens.cache_write_5m, tokens.uncached_input) == (80, 20, 0)
    assert (tokens.audio_output, tokens.reasoning) == (10, 10)


def test_a_negative_count_is_refused():
    with pytest.raises(ValueError):
        Tokens(10, 10, cache_read=-1)


def test_parts_of_other_totals_are_refused():
    with pytest.raises(ValueError):
        token_cost(
            prompt_tokens=10,
            completion_tokens=1,
            model_multiplier=1,
            completion_multiplier=1,
            line_multiplier=1,
            parts=Tokens(11, 1),
        )
