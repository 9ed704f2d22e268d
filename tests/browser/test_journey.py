"""The whole journey of a new customer, as a person sees it in the browser: find the home page,
sign up, pay, get a key, call the API with the official client, read the charts and the cost of
a request, chat in the playground, hear of a price change, and get a late recharge credited
through support.

Every step is screenshotted into artifacts/ (desktop, then the main pages at phone width), and
the browser console must stay free of errors, Content-Security-Policy violations included."""

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import openai
import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.conf import settings
from django.core import mail
from django.utils import timezone

from accounts.models import User
from billing.models import RechargeOrder
from console.lib.money import format_usd
from tests.accounts.test_mfa import totp
from tests.conftest import PASSWORD, Page, balance_of, make_user
from tests.relay.conftest import make_channel, wait_until

pytestmark = pytest.mark.browser

EMAIL = "newcomer@example.com"
SECRET = "a-long-enough-secret"
PHONE = {"width": 390, "height": 844}
MAIN_PAGES = [
    "/", "/logs/", "/tokens/", "/playground/", "/billing/recharge/", "/pricing/", "/announcements/"
]  # fmt: skip


@pytest.fixture(autouse=True)
def _journey_settings(settings, tmp_path):
    settings.PAYMENTS_SANDBOX = True
    settings.GATEWAY_FLUSH_SECONDS = 0.05
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def staff_page(browser, live_site, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = Page(context.new_page(), live_site.url, f"{request.node.name}-staff")
    yield tab
    context.close()
    assert tab.errors == [], f"the staff browser console reported errors: {tab.errors}"


@dataclass
class StaffMember:
    email: str
    totp_secret: str  # what their authenticator app holds


@dataclass
class Breakdown:
    """A logged request's cost breakdown: its formula, the amount charged, the token counts."""

    formula: str
    charged: Decimal
    prompt_tokens: int
    completion_tokens: int


def money(text):
    """Decimal dollars from the first "$1,234.5678" in a text."""
    return Decimal(re.search(r"\$([\d,]+(?:\.\d+)?)", text).group(1).replace(",", ""))


def balance(page):
    """The header's balance, in cents as every amount is shown; `balance_of` is exact."""
    return page.locator(".balance-chip strong").first.inner_text()


def customer():
    return User.objects.get(email=EMAIL)


def test_a_new_customer_from_sign_up_to_a_credited_late_recharge(
    page, staff_page, live_site, upstream, model_price, default_line
):
    model = model_price.model
    make_channel(upstream, models=[model])
    staff = a_staff_member_with_an_authenticator()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_site.url)

    visit_the_home_page_and_go_to_sign_up(page, model)
    sign_up_and_confirm_the_address(page)
    recharge_twenty_dollars_in_the_sandbox(page)
    key = create_a_token_and_copy_its_key(page)
    call_the_api_with_the_official_client(live_site.url, key, model)
    spend_today = see_both_requests_on_the_dashboard(page)
    breakdown = open_the_cost_breakdown_of_a_logged_request(page, model, spend_today)
    check_the_breakdown_against_the_pricing_page(page, breakdown, model, default_line)
    chat_in_the_playground_billed_and_logged(page, model)
    subscribe_to_price_change_emails(page)

    sign_in_to_admin_with_the_authenticator_code(staff_page, staff)
    raise_the_model_multiplier(staff_page, model)
    see_the_price_change_announced(staff_page, model)
    receive_the_price_change_by_email_and_announcement(page, model)

    order, ticket_url = open_a_ticket_for_a_late_recharge(page)
    before_credit = balance_of(customer())
    credit_the_order_from_the_ticket_and_reply(staff_page, order)
    see_the_reply_and_the_credited_money(page, ticket_url, before_credit)
    look_at_the_main_pages_at_phone_width(page, ticket_url)


def a_staff_member_with_an_authenticator():
    staff = make_user("staff@example.com", staff=True, name="Sam")
    secret = generate_totp_secret()
    TOTP.activate(staff, secret)
    return StaffMember(staff.email, secret)


def visit_the_home_page_and_go_to_sign_up(page, model):
    """A visitor's home page says what the service is, its base URL and the models' prices."""
    page.open("/")
    page.get_by_role("heading", name="One API for many models").wait_for()
    assert page.locator("#base-url").inner_text() == f"{settings.SITE_URL}/v1"
    row = page.locator("#models tr").filter(has_text=model)
    assert money(row.locator("td[data-label='Input / 1M']").inner_text()) > 0
    page.screenshot("home")
    page.set_viewport_size(PHONE)
    page.screenshot("phone-home")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("link", name="Create an account").click()
    page.get_by_role("button", name="Sign up").wait_for()


def sign_up_and_confirm_the_address(page):
    """Sign up, and verify the address by the emailed link."""
    page.open("/accounts/signup/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(SECRET)
    page.get_by_label("Password (again)").fill(SECRET)
    page.get_by_role("button", name="Sign up").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    page.screenshot("check-your-email")
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+/", mail.outbox[-1].body).group(0)
    page.open("/" + link.split("/", 3)[3])
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("heading", name="Get started in three steps").wait_for()
    page.screenshot("first-dashboard")
    assert balance(page) == "$0.00"


def recharge_twenty_dollars_in_the_sandbox(page):
    """Recharge $20 with the sandbox provider; the balance shows it."""
    page.get_by_role("link", name="Recharge", exact=True).first.click()
    page.get_by_role("button", name="$20.00").click()
    page.get_by_text("You pay $20.00").wait_for()
    page.screenshot("recharge")
    page.get_by_role("button", name="Continue to payment").click()
    page.get_by_role("heading", name="Pay $20.00").wait_for()
    page.get_by_role("button", name="Pay $20.00").click()
    page.get_by_text("Credited").first.wait_for()
    page.screenshot("order-credited")
    assert balance(page) == "$20.00"


def create_a_token_and_copy_its_key(page):
    """A token with the defaults; the key is shown once and copied from the page."""
    page.get_by_role("link", name="Tokens").first.click()
    page.get_by_role("link", name="Create your first token").click()
    page.get_by_label("Name").fill("My app")
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("heading", name="Token “My app” created").wait_for()
    page.get_by_role("button", name="Copy key").click()
    page.get_by_role("button", name="Copied").wait_for()
    key = page.evaluate("navigator.clipboard.readText()")
    assert key == page.locator("#new-key").inner_text() and key.startswith("sk-")
    page.screenshot("key-shown-once")
    return key


def call_the_api_with_the_official_client(site_url, key, model):
    """The official client, as the page says: a chat completion and a streamed one."""
    client = openai.OpenAI(base_url=f"{site_url}/v1", api_key=key, max_retries=0)
    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello there"}]
    )
    assert chat.choices[0].message.content
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count to three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed


def see_both_requests_on_the_dashboard(page):
    """The dashboard counts both requests, in the chart's text alternative too. Returns the
    day's spend as its card shows it."""
    page.get_by_role("link", name="Dashboard").first.click()
    page.get_by_text("2 requests and").first.wait_for()
    page.screenshot("dashboard-with-requests")
    card = page.locator(".stat").filter(has_text="Spend today")
    return card.locator(".stat-value").inner_text()


def open_the_cost_breakdown_of_a_logged_request(page, model, spend_today):
    """The request log lists both requests, to the micro-dollar; they add up to the day's spend
    and came off the balance, which the header shows in cents. One row's breakdown opens."""
    page.get_by_role("link", name="Logs").first.click()
    rows = page.locator("table tbody tr").filter(has_text=model)
    assert rows.count() == 2
    costs = [money(cell) for cell in rows.locator("td[data-label=Cost]").all_inner_texts()]
    spent = int(sum(costs) * 1_000_000)
    assert spent > 0 and format_usd(spent) == spend_today
    assert balance_of(customer()) == 20_000_000 - spent
    assert balance(page) == format_usd(20_000_000 - spent)
    rows.first.get_by_role("link", name="Breakdown").click()
    formula = page.locator(".formula").first
    formula.wait_for()
    page.screenshot("cost-breakdown")
    explained = formula.inner_text()
    charged = money(page.get_by_text("Charged:").inner_text())
    prompt, completion = map(int, re.search(r"= \((\d+) \+ (\d+) ×", explained).groups())
    return Breakdown(explained, charged, prompt, completion)


def check_the_breakdown_against_the_pricing_page(page, breakdown, model, line):
    """The breakdown uses the pricing page's multipliers, and charges what they come to."""
    page.get_by_role("link", name="Pricing").first.click()
    price_row = page.locator("tr").filter(has_text=model).first
    cells = price_row.locator("td").all_inner_texts()
    model_x, completion_x = Decimal(cells[2]), Decimal(cells[3])
    assert f"× {cells[3]}) × {cells[2]} × " in breakdown.formula
    tokens = breakdown.prompt_tokens + breakdown.completion_tokens * completion_x
    weighted = tokens * model_x * line.multiplier
    expected = (weighted * 2).quantize(Decimal(1), rounding=ROUND_HALF_UP) / Decimal(1_000_000)
    assert breakdown.charged == expected > 0
    page.screenshot("pricing")


def chat_in_the_playground_billed_and_logged(page, model):
    """Two turns of a streamed chat through the token, from the console: each shows its cost,
    which comes off the balance, and is in the request log with its breakdown."""
    before = balance_of(customer())
    page.get_by_role("link", name="Playground").first.click()
    page.get_by_label("Token").select_option(label="My app")
    page.get_by_label("Model").select_option(model)
    page.get_by_label("System message").fill("Answer in one line.")
    costs = []
    for turn, question in enumerate(["Hello there", "And once more"]):
        page.get_by_label("Your message").fill(question)
        page.get_by_role("button", name="Send").click()
        page.get_by_role("link", name="Cost breakdown").nth(turn).wait_for()
        costs.append(money(page.locator(".chat-cost").nth(turn).inner_text()))
    assert page.locator(".from-assistant .chat-text").count() == 2
    assert "SWITCHBOARD_API_KEY" in page.locator("#pg-curl-text").inner_text()
    page.screenshot("playground")
    page.get_by_role("link", name="Cost breakdown").nth(1).click()
    page.get_by_text("Charged:").wait_for()
    assert money(page.get_by_text("Charged:").inner_text()) == costs[1]
    assert "My app" in page.locator(".breakdown .kv").inner_text()
    page.get_by_role("link", name="Logs").first.click()
    assert page.locator("table tbody tr").filter(has_text=model).count() == 4
    charged = int(sum(costs) * 1_000_000)
    wait_until(lambda: balance_of(customer()) == before - charged, message="the chat's charge")


def subscribe_to_price_change_emails(page):
    page.open("/profile/")
    page.get_by_text("Email me when a price changes").click()
    page.get_by_role("button", name="Save email preferences").click()
    page.get_by_text("Email preferences saved").wait_for()
    page.screenshot("price-emails-on")


def sign_in_to_admin_with_the_authenticator_code(staff_page, staff):
    """The staff console's sign-in is everyone's, with the authenticator code after the
    password."""
    staff_page.open("/admin/")
    staff_page.get_by_label("Email", exact=True).fill(staff.email)
    staff_page.get_by_label("Password", exact=True).fill(PASSWORD)
    staff_page.get_by_role("button", name="Log in").click()
    staff_page.locator("input[name=code]").fill(totp(staff.totp_secret))
    staff_page.screenshot("staff-code")
    staff_page.get_by_role("button", name="Log in").click()


def raise_the_model_multiplier(staff_page, model):
    """Staff raise the model's multiplier in admin: saving it publishes the change in an
    announcement, and it applies now."""
    staff_page.get_by_role("link", name="Model prices").click()
    staff_page.get_by_role("link", name=model).click()
    staff_page.get_by_label("Model multiplier").fill("0.1")
    staff_page.get_by_label("Why the prices change (published)").fill(
        "The provider raised its price."
    )
    staff_page.screenshot("change-multiplier")
    staff_page.get_by_role("button", name="Save", exact=True).click()
    staff_page.get_by_text(f"Price change of {model} published in").wait_for()


def see_the_price_change_announced(staff_page, model):
    """The message links to the announcement, public with the new price."""
    staff_page.get_by_role("link", name=f"Price change: {model}").click()
    staff_page.get_by_text("The provider raised its price.").wait_for()
    staff_page.screenshot("price-announcement")
    staff_page.screenshot("published")


def receive_the_price_change_by_email_and_announcement(page, model):
    """The customer gets one email, and the announcement waits in the console."""
    price_mails = [m for m in mail.outbox if m.to == [EMAIL] and "price" in m.subject.lower()]
    assert len(price_mails) == 1
    assert model in price_mails[0].body and "0.1" in price_mails[0].body
    page.open("/")
    page.get_by_role("link", name=re.compile("Announcements")).first.click()
    page.get_by_text(model).first.wait_for()
    page.screenshot("announcement")


def open_a_ticket_for_a_late_recharge(page):
    """A recharge left unpaid, fifteen minutes later, becomes a support ticket. Returns the
    order and the ticket's address."""
    page.open("/billing/recharge/")
    page.get_by_label("Amount (USD)").fill("10")
    page.get_by_role("button", name="Continue to payment").click()
    page.get_by_role("heading", name="Pay $10.00").wait_for()
    pending = RechargeOrder.objects.get(status=RechargeOrder.Status.PENDING)
    RechargeOrder.objects.filter(pk=pending.pk).update(
        created_at=timezone.now() - timedelta(minutes=15)
    )
    page.open("/billing/orders/")
    page.get_by_role("link", name="Not credited? Open a ticket").click()
    page.get_by_label("What happened?").fill("I paid $10 by card a quarter of an hour ago.")
    page.get_by_role("button", name="Open the ticket").click()
    page.get_by_text("opened. We answer here and by email.").wait_for()
    page.screenshot("ticket-opened")
    return pending, page.url


def credit_the_order_from_the_ticket_and_reply(staff_page, order):
    """Staff find the ticket flagged, credit the order by hand from it, and reply."""
    staff_page.open("/admin/support/ticket/?order=pending")
    staff_page.get_by_role("link", name=re.compile(r"^T-")).first.click()
    staff_page.get_by_role("link", name="Credit by hand…").click()
    staff_page.get_by_role("button", name="Credit $10.00").click()
    staff_page.get_by_text(f"Order {order.number} credited").wait_for()
    staff_page.get_by_label("Reply").fill("Found your payment: $10.00 is on your balance now.")
    staff_page.get_by_label("Status").select_option("resolved")
    staff_page.get_by_role("button", name="Save", exact=True).click()
    staff_page.get_by_text("was changed successfully").wait_for()
    staff_page.screenshot("ticket-handled")


def see_the_reply_and_the_credited_money(page, ticket_url, before_credit):
    """The customer sees the reply, the money and the email."""
    page.goto(ticket_url)
    page.get_by_text("Found your payment").wait_for()
    assert balance_of(customer()) == before_credit + 10_000_000
    assert balance(page) == format_usd(before_credit + 10_000_000)
    replies = [m for m in mail.outbox if m.to == [EMAIL] and "Reply to" in m.subject]
    assert len(replies) == 1 and "Found your payment" in replies[0].body
    page.screenshot("ticket-answered")


def look_at_the_main_pages_at_phone_width(page, ticket_url):
    page.set_viewport_size(PHONE)
    for path in MAIN_PAGES:
        page.open(path)
        page.screenshot("phone-" + (path.strip("/").replace("/", "-") or "dashboard"))
    page.goto(ticket_url)
    page.screenshot("phone-ticket")
