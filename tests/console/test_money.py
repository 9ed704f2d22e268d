import pytest

from console.lib.money import AmountError, dollars_to_micros, format_usd


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "$0.00"),
        (20_000_000, "$20.00"),
        (7_500, "$0.0075"),
        (1_234_567_890, "$1,234.56789"),
        (-2_500_000, "-$2.50"),
        (1, "$0.000001"),
    ],
)
def test_it_formats_micro_dollars_without_losing_a_micro(micros, text):
    assert format_usd(micros) == text


def test_exact_format_shows_all_six_decimals():
    assert format_usd(7_500, exact=True) == "$0.007500"


@pytest.mark.parametrize(
    ("value", "micros"),
    [("20", 20_000_000), ("$1,000.5", 1_000_500_000), ("0.0000005", 1), ("0.0000004", 0)],
)
def test_it_converts_dollars_to_micros_exactly(value, micros):
    assert dollars_to_micros(value) == micros


@pytest.mark.parametrize("value", ["abc", "", "NaN", "inf"])
def test_it_refuses_what_is_not_money(value):
    with pytest.raises(ValueError):
        dollars_to_micros(value)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("1e309", "too_large"),
        ("1" * 30, "too_large"),
        ("1e12", "too_large"),
        ("-1e309", "too_small"),
    ],
)
def test_it_refuses_amounts_beyond_a_trillion_dollars(value, code):
    """Decimal arithmetic cannot hold them (InvalidOperation, a 500 once), nor a 64-bit column."""
    with pytest.raises(AmountError) as refused:
        dollars_to_micros(value)
    assert refused.value.code == code


def test_tiny_amounts_round_to_zero_micros():
    assert dollars_to_micros("1e-400") == 0
