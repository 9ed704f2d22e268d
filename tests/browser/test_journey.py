"""The whole journey of a new customer, as a person sees it in the browser: sign up, pay, get a
key, call the API with the official client, read the charts and the cost of a request, hear of
a price change, and get a late recharge credited through support.

Every step is screenshotted into artifacts/ (desktop, then the main pages at phone width), and
the browser console must stay free of errors, Content-Security-Policy violations included."""

import re
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import openai
import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.core import mail
from django.utils import timezone

from billing.models import RechargeOrder
from tests.accounts.test_mfa import totp
from tests.conftest import PASSWORD, Page, make_user
from tests.relay.conftest import make_channel

pytestmark = pytest.mark.browser

EMAIL = "newcomer@example.com"
SECRET = "a-long-enough-secret"
PHONE = {"width": 390, "height": 844}


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


def money(text):
    """Decimal dollars from the first "$1,234.5678" in a text."""
    return Decimal(re.search(r"\$([\d,]+(?:\.\d+)?)", text).group(1).replace(",", ""))


def balance(page):
    return money(page.locator(".balance-chip").first.inner_text())


def test_a_new_customer_from_sign_up_to_a_credited_late_recharge(
    page, staff_page, live_site, upstream, model_price, default_group
):
    make_channel(upstream, models=[model_price.model])
    staff = make_user("staff@example.com", staff=True, name="Sam")
    staff_secret = generate_totp_secret()
    TOTP.activate(staff, staff_secret)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_site.url)

    # Sign up, and verify the address by the emailed link.
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
    assert balance(page) == 0

    # Recharge $20 with the sandbox provider; the balance shows it.
    page.get_by_role("link", name="Recharge", exact=True).first.click()
    page.get_by_role("button", name="$20.00").click()
    page.get_by_text("You pay $20.00").wait_for()
    page.screenshot("recharge")
    page.get_by_role("button", name="Continue to payment").click()
    page.get_by_role("heading", name="Pay $20.00").wait_for()
    page.get_by_role("button", name="Pay $20.00").click()
    page.get_by_text("Credited").first.wait_for()
    page.screenshot("order-credited")
    assert balance(page) == 20

    # A token with the defaults; the key is shown once and copied from the page.
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

    # The official client, as the page says: a chat completion and a streamed one.
    client = openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)
    chat = client.chat.completions.create(
        model=model_price.model, messages=[{"role": "user", "content": "Hello there"}]
    )
    assert chat.choices[0].message.content
    stream = client.chat.completions.create(
        model=model_price.model,
        messages=[{"role": "user", "content": "Count to three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed

    # The dashboard counts both requests, in the chart's text alternative too.
    page.get_by_role("link", name="Dashboard").first.click()
    page.get_by_text("2 requests and").first.wait_for()
    spent = money(page.locator(".stat").filter(has_text="Spend today").inner_text())
    assert spent > 0 and balance(page) == 20 - spent
    page.screenshot("dashboard-with-requests")

    # The request log lists them; one row's cost breakdown agrees with the pricing page.
    page.get_by_role("link", name="Logs").first.click()
    rows = page.locator("table tbody tr").filter(has_text=model_price.model)
    assert rows.count() == 2
    costs = [money(cell) for cell in rows.locator("td[data-label=Cost]").all_inner_texts()]
    assert sum(costs) == spent
    rows.first.get_by_role("link", name="Breakdown").click()
    formula = page.locator(".formula").first
    formula.wait_for()
    page.screenshot("cost-breakdown")
    explained = formula.inner_text()
    charged = money(page.get_by_text("Charged:").inner_text())
    prompt, completion = map(int, re.search(r"= \((\d+) \+ (\d+) ×", explained).groups())

    page.get_by_role("link", name="Pricing").first.click()
    price_row = page.locator("tr").filter(has_text=model_price.model).first
    cells = price_row.locator("td").all_inner_texts()
    model_x, completion_x = Decimal(cells[2]), Decimal(cells[3])
    assert f"× {cells[3]}) × {cells[2]} × " in explained
    weighted = (prompt + completion * completion_x) * model_x * default_group.multiplier
    expected = (weighted * 2).quantize(Decimal(1), rounding=ROUND_HALF_UP) / Decimal(1_000_000)
    assert charged == expected > 0
    page.screenshot("pricing")

    # Subscribe to price-change emails.
    page.open("/profile/")
    page.get_by_text("Email me when a price changes").click()
    page.get_by_role("button", name="Save email preferences").click()
    page.get_by_text("Email preferences saved").wait_for()
    page.screenshot("price-emails-on")

    # Staff raise the model's multiplier in admin, then publish the change.
    # The staff console's sign-in is everyone's, with the authenticator code after the password.
    staff_page.open("/admin/")
    staff_page.get_by_label("Email", exact=True).fill(staff.email)
    staff_page.get_by_label("Password", exact=True).fill(PASSWORD)
    staff_page.get_by_role("button", name="Log in").click()
    staff_page.locator("input[name=code]").fill(totp(staff_secret))
    staff_page.screenshot("staff-code")
    staff_page.get_by_role("button", name="Sign In").click()
    staff_page.get_by_role("link", name="Model prices").click()
    staff_page.get_by_role("link", name=model_price.model).click()
    staff_page.get_by_label("Model multiplier").fill("0.1")
    staff_page.get_by_label("Reason for a price change").fill("The provider raised its price.")
    staff_page.screenshot("change-multiplier")
    staff_page.get_by_role("button", name="Save", exact=True).click()
    staff_page.get_by_text("recorded as 1 adjustment").wait_for()
    staff_page.open("/admin/billing/priceadjustment/")
    staff_page.locator("input[name=_selected_action]").first.check()
    staff_page.get_by_label("Action:").select_option("publish")
    staff_page.get_by_role("button", name="Run").click()
    staff_page.get_by_role("button", name="Publish price changes").click()
    staff_page.get_by_text("Published “").wait_for()
    staff_page.screenshot("published")

    # The customer gets one email, and the announcement waits in the console.
    price_mails = [m for m in mail.outbox if m.to == [EMAIL] and "price" in m.subject.lower()]
    assert len(price_mails) == 1
    assert model_price.model in price_mails[0].body and "0.1" in price_mails[0].body
    page.open("/")
    page.get_by_role("link", name=re.compile("Announcements")).first.click()
    page.get_by_text(model_price.model).first.wait_for()
    page.screenshot("announcement")

    # A recharge left unpaid, fifteen minutes later, becomes a support ticket.
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
    ticket_url = page.url
    page.screenshot("ticket-opened")

    # Staff find it flagged, credit the order by hand from the ticket, and reply.
    staff_page.open("/admin/console/ticket/?order=pending")
    staff_page.get_by_role("link", name=re.compile(r"^T-")).first.click()
    staff_page.get_by_role("link", name="Credit by hand…").click()
    staff_page.get_by_role("button", name="Credit $10.00").click()
    staff_page.get_by_text(f"Order {pending.number} credited").wait_for()
    staff_page.get_by_label("Reply").fill("Found your payment: $10.00 is on your balance now.")
    staff_page.get_by_label("Status").select_option("resolved")
    staff_page.get_by_role("button", name="Save", exact=True).click()
    staff_page.get_by_text("was changed successfully").wait_for()
    staff_page.screenshot("ticket-handled")

    # The customer sees the reply, the money and the email.
    page.goto(ticket_url)
    page.get_by_text("Found your payment").wait_for()
    assert balance(page) == 30 - spent
    replies = [m for m in mail.outbox if m.to == [EMAIL] and "Reply to" in m.subject]
    assert len(replies) == 1 and "Found your payment" in replies[0].body
    page.screenshot("ticket-answered")

    # The main pages at phone width.
    page.set_viewport_size(PHONE)
    for path in ["/", "/logs/", "/tokens/", "/billing/recharge/", "/pricing/", "/announcements/"]:
        page.open(path)
        page.screenshot("phone-" + (path.strip("/").replace("/", "-") or "dashboard"))
    page.goto(ticket_url)
    page.screenshot("phone-ticket")
