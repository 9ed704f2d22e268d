from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.urls import reverse
from django.utils import timezone

from billing import services
from billing.models import LedgerEntry, Line, LineGrant, ModelPrice, RechargeOrder
from tests.billing.test_orders import make_order
from tests.conftest import balance_of


@pytest.fixture(autouse=True)
def sandbox(settings):
    settings.PAYMENTS_SANDBOX = True


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("twenty", "Enter an amount in dollars, such as 20 (between $1.00 and $10,000.00)."),
        ("-5", "The amount must be more than zero (between $1.00 and $10,000.00)."),
        ("0", "The amount must be more than zero (between $1.00 and $10,000.00)."),
        ("0.50", "The smallest amount is $1.00 (between $1.00 and $10,000.00)."),
        ("10000.01", "The largest amount is $10,000.00 (between $1.00 and $10,000.00)."),
        ("20.005", "Use at most two decimals (whole cents)."),
        ("", "This field is required."),
    ],
)
def test_a_bad_amount_gets_an_error_naming_the_limits(alice_client, alice, amount, message):
    response = alice_client.post(
        reverse("billing:recharge"), {"amount": amount, "provider": "sandbox"}
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not RechargeOrder.objects.exists()


def test_recharging_with_the_sandbox_goes_to_its_pay_page(alice_client, alice):
    response = alice_client.post(
        reverse("billing:recharge"), {"amount": "$20", "provider": "sandbox"}
    )
    order = RechargeOrder.objects.get(user=alice)
    assert order.amount == 20_000_000
    assert response.url == reverse("billing:sandbox_pay", args=[order.number])
    page = alice_client.get(response.url)
    assert "Pay $20.00" in page.content.decode()


def test_the_bonus_preview_shows_what_a_recharge_earns(alice_client):
    from billing.models import BonusTier

    BonusTier.objects.create(threshold=50_000_000, percent=5)
    html = alice_client.get(reverse("billing:bonus_preview"), {"amount": "100"}).content.decode()
    assert "a bonus of $5.00 (+5%)" in html
    html = alice_client.get(reverse("billing:bonus_preview"), {"amount": "x"}).content.decode()
    assert "Enter an amount in dollars" in html


def test_the_sandbox_pays_through_the_signed_webhook_over_http(live_site, alice, settings):
    """The whole sandbox journey over real HTTP: the pay page calls our own webhook."""
    settings.PAYMENTS_SANDBOX = True
    order = make_order(alice)
    with httpx.Client(base_url=live_site.url) as browser:
        login = browser.get(reverse("account_login"))
        csrf = browser.cookies["csrftoken"]
        browser.post(
            reverse("account_login"),
            data={
                "login": alice.email,
                "password": "correct-horse-battery",
                "csrfmiddlewaretoken": csrf,
            },
        )
        assert login.status_code == 200
        response = browser.post(
            reverse("billing:sandbox_pay", args=[order.number]),
            data={"outcome": "pay", "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
        )
        assert response.status_code == 302
        assert response.headers["location"] == order.get_absolute_url()
    order.refresh_from_db()
    assert order.status == RechargeOrder.Status.CREDITED
    assert balance_of(alice) == 20_000_000


def test_the_balance_page_lists_the_ledger_newest_first_with_a_kind_filter(alice_client, alice):
    services.balance_credit(
        user=alice, amount=3_000_000, kind=LedgerEntry.Kind.ADJUSTMENT, note="welcome"
    )
    services.balance_charge(
        user=alice, amount=1_000_000, kind=LedgerEntry.Kind.USAGE, request_count=7
    )
    html = alice_client.get(reverse("billing:balance")).content.decode()
    assert html.index("7 requests") < html.index("welcome")
    assert "$2.000000" in html
    html = alice_client.get(reverse("billing:balance"), {"kind": "usage"}).content.decode()
    assert "7 requests" in html and "welcome" not in html


def test_the_ledger_pages_by_keyset(alice_client, alice):
    for n in range(55):
        services.balance_credit(
            user=alice, amount=1_000 + n, kind=LedgerEntry.Kind.ADJUSTMENT, note=f"r{n}"
        )
    first = alice_client.get(reverse("billing:balance")).content.decode()
    assert "r54<" in first and "r4<" not in first and "Show older entries" in first
    last_id = LedgerEntry.objects.order_by("-id")[49].id
    more = alice_client.get(
        reverse("billing:balance"), {"after": last_id}, headers={"HX-Request": "true"}
    )
    html = more.content.decode()
    assert "<html" not in html
    assert "r4<" in html and "r0<" in html and "r5<" not in html
    assert "Show older entries" not in html


def test_the_empty_balance_page_says_what_to_do(alice_client):
    html = alice_client.get(reverse("billing:balance")).content.decode()
    assert "No history yet" in html
    assert "Recharge your balance" in html


def test_the_top_bar_shows_the_balance_in_cents(alice_client, alice):
    services.balance_credit(user=alice, amount=12_345_678, kind=LedgerEntry.Kind.ADJUSTMENT)
    html = alice_client.get(reverse("console:help")).content.decode()
    assert "<strong>$12.34</strong>" in html and "$12.345" not in html


def test_late_orders_offer_help(alice_client, alice):
    order = make_order(alice, created_at=timezone.now() - timedelta(minutes=15))
    html = alice_client.get(reverse("billing:orders")).content.decode()
    assert order.number in html
    assert f"/support/new/?order={order.number}" in html
    assert "Not credited? Open a ticket" in html
    html = alice_client.get(order.get_absolute_url()).content.decode()
    assert "Not credited after" in html and "Open a ticket with this order" in html
    # A fresh order is not late yet: no offer.
    fresh = make_order(alice)
    html = alice_client.get(reverse("billing:orders")).content.decode()
    assert f"?order={fresh.number}" not in html
    # Once asked about, the order links to its ticket instead.
    from console.support.models import Ticket

    ticket = Ticket.objects.create(
        number="T-TEST0001", user=alice, subject="Late", category="recharge", order=order
    )
    html = alice_client.get(reverse("billing:orders")).content.decode()
    assert ticket.get_absolute_url() in html and f"?order={order.number}" not in html


@pytest.mark.parametrize("name", ["billing:order", "billing:sandbox_pay"])
def test_another_users_order_is_a_404(bob_client, alice, name):
    order = make_order(alice)
    assert bob_client.get(reverse(name, args=[order.number])).status_code == 404
    assert (
        bob_client.post(reverse(name, args=[order.number]), {"outcome": "pay"}).status_code == 404
    )


def test_the_pricing_page_is_public_and_priced_per_line(client, db):
    ModelPrice.objects.create(
        model="gpt-4o",
        vendor="OpenAI",
        model_multiplier=Decimal("1.25"),
        completion_multiplier=Decimal(4),
    )
    ModelPrice.objects.create(
        model="claude-x",
        vendor="Anthropic",
        model_multiplier=Decimal(1),
        completion_multiplier=Decimal(5),
    )
    ModelPrice.objects.create(model="old-model", vendor="OpenAI", enabled=False)
    ModelPrice.objects.create(
        model="dall-e-3", vendor="OpenAI", pricing="per_call", call_price=40_000
    )
    Line.objects.create(name="vip", multiplier=Decimal(2))
    Line.objects.create(name="training", multiplier=Decimal("0.5"), requires_grant=True)
    html = client.get(reverse("billing:pricing")).content.decode()
    assert "gpt-4o" in html and "claude-x" in html and "old-model" not in html
    assert "$2.50" in html and "$10.00" in html  # gpt-4o input and output per 1M
    assert "$0.04 per call" in html
    assert "training" not in html
    html = client.get(reverse("billing:pricing"), {"line": "vip"}).content.decode()
    assert "$5.00" in html and "$20.00" in html
    html = client.get(reverse("billing:pricing"), {"group": "vip"}).content.decode()  # old links
    assert "$5.00" in html and "$20.00" in html
    html = client.get(reverse("billing:pricing"), {"vendor": "Anthropic"}).content.decode()
    assert "claude-x" in html and "gpt-4o" not in html
    html = client.get(reverse("billing:pricing"), {"q": "zzz"}).content.decode()
    assert "No model matches" in html


def test_a_granted_line_shows_on_the_pricing_page(alice_client, alice):
    training = Line.objects.create(name="training", multiplier=Decimal("0.5"), requires_grant=True)
    assert "training" not in alice_client.get(reverse("billing:pricing")).content.decode()
    LineGrant.objects.create(line=training, user=alice)
    assert "training (×0.5)" in alice_client.get(reverse("billing:pricing")).content.decode()


def test_a_redemption_code_is_redeemed_once(alice_client, alice, bob, charlie):
    _batch, text = services.redemption_batch_create(
        name="launch", amount=5_000_000, count=2, expires_at=None, staff_user=charlie
    )
    code = text.splitlines()[1].split(",")[0]
    response = alice_client.post(reverse("billing:redeem"), {"code": code.lower()}, follow=True)
    assert "Code redeemed: $5.00 added to your balance." in response.content.decode()
    response = alice_client.post(reverse("billing:redeem"), {"code": code}, follow=True)
    assert "That code has already been used." in response.content.decode()
    assert balance_of(alice) == 5_000_000


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda code: None, "That code does not exist. Check it for typos."),
        (
            lambda code: code.batch.__class__.objects.update(
                expires_at=timezone.now() - timedelta(seconds=1)
            ),
            "That code has expired.",
        ),
        (lambda code: code.__class__.objects.update(voided=True), "That code has been withdrawn."),
    ],
    ids=["unknown", "expired", "withdrawn"],
)
def test_a_bad_code_gets_a_clear_message(alice_client, alice, charlie, setup, message):
    from billing.models import RedemptionCode

    _batch, text = services.redemption_batch_create(
        name="x", amount=1_000_000, count=1, expires_at=None, staff_user=charlie
    )
    code = text.splitlines()[1].split(",")[0]
    setup(RedemptionCode.objects.get())
    attempt = code if "exist" not in message else "AAAA-BBBB-CCCC-DDDD"
    response = alice_client.post(reverse("billing:redeem"), {"code": attempt}, follow=True)
    assert message in response.content.decode()
    assert balance_of(alice) == 0


def test_code_attempts_are_rate_limited_per_user(alice_client, settings):
    settings.REDEEM_ATTEMPTS = (3, 600)
    for _ in range(3):
        alice_client.post(reverse("billing:redeem"), {"code": "NOPE-NOPE-NOPE-NOPE"})
    response = alice_client.post(reverse("billing:redeem"), {"code": "NOPE"}, follow=True)
    assert "Too many code attempts. Wait 10 minutes" in response.content.decode()
