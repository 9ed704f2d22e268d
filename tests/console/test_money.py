import pytest
from django.template import Context, Template
from django.urls import reverse

from billing import services
from billing.models import LedgerEntry
from console.lib.money import (
    AmountError,
    dollars_to_micros,
    format_dollars_plain,
    format_usd,
    format_usd_cost,
    format_usd_price,
)


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "$0.00"),
        (20_000_000, "$20.00"),
        (1_234_567_890, "$1,234.56"),
        (577_808_832, "$577.80"),
        (-2_500_000, "-$2.50"),
        (19_999, "$0.01"),
    ],
)
def test_an_amount_shows_whole_cents(micros, text):
    assert format_usd(micros) == text


def test_an_amount_cuts_its_cents_and_never_rounds_up():
    """A balance of $0.018 has one cent to spend, not two."""
    assert format_usd(18_000) == "$0.01"
    assert format_usd(9_999_999) == "$9.99"


@pytest.mark.parametrize(
    ("micros", "text"), [(1, "<$0.01"), (9_999, "<$0.01"), (-4_000, "-<$0.01")]
)
def test_an_amount_under_a_cent_does_not_read_as_nothing(micros, text):
    assert format_usd(micros) == text


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "$0.000000"),
        (1, "$0.000001"),
        (7_500, "$0.007500"),
        (20_000_000, "$20.000000"),
        (-1_234_567_890, "-$1,234.567890"),
    ],
)
def test_a_cost_shows_every_micro_dollar_with_six_decimals(micros, text):
    assert format_usd_cost(micros) == text


@pytest.mark.parametrize(
    ("micros", "text"),
    [(2_500_000, "$2.50"), (75_000, "$0.075"), (375, "$0.000375"), (40_000, "$0.04"), (0, "$0.00")],
)
def test_a_price_shows_the_decimals_it_has_at_least_two(micros, text):
    assert format_usd_price(micros) == text


@pytest.mark.parametrize(
    ("micros", "text"),
    [(20_000_000, "20.00"), (1_234_500_000, "1234.50"), (375, "0.000375"), (-2_000_000, "-2.00")],
)
def test_plain_dollars_read_back_to_the_same_micro_dollars(micros, text):
    assert format_dollars_plain(micros) == text
    assert dollars_to_micros(text) == micros


def test_the_template_filters_follow_the_rule():
    template = Template("{{ m|usd }} {{ m|usd_cost }} {{ m|usd_price }}")
    assert template.render(Context({"m": 7_500})) == "&lt;$0.01 $0.007500 $0.0075"
    assert template.render(Context({"m": None})) == "  "


def test_the_header_chip_shows_the_balance_in_cents(alice_client, alice):
    services.balance_credit(user=alice, amount=577_808_832, kind=LedgerEntry.Kind.ADJUSTMENT)
    html = alice_client.get(reverse("billing:recharge")).content.decode()
    chip = html[html.index('id="balance-chip"') :]
    chip = chip[: chip.index("</a>")]
    assert "<strong>$577.80</strong>" in chip and "577.808832" not in html.split("<main")[0]


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
