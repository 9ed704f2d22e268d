"""Accessibility: axe-core on every page a customer uses, keyboard-only use, and text for the
charts. axe-core is vendored (tests/browser/vendor, MPL-2.0) and run inside Chromium."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from billing import services as billing
from billing.models import LedgerEntry
from console.announcements.models import Announcement
from console.announcements.services import announcement_publish
from console.support.models import Ticket
from logs.writer import write_batch
from tests.conftest import sign_in
from tests.logs.test_pages import make_record
from tokens.services import token_create

pytestmark = pytest.mark.browser

AXE = (Path(__file__).parent / "vendor" / "axe-4.14.1.min.js").read_text()
# What a customer must be able to use; "minor" and "moderate" findings are reported by axe
# too, but only these fail the test.
BLOCKING = {"serious", "critical"}


@pytest.fixture
def customer(alice, default_line, model_price):
    """alice with something on every page: money, a token, requests, an order, a ticket."""
    billing.balance_credit(user=alice, amount=20_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    token, _key = token_create(user=alice, name="Backend", line=default_line, notify=False)
    now = timezone.now()
    write_batch([make_record(alice, token, at=now - timedelta(minutes=m)) for m in range(30)])
    billing.order_create(user=alice, amount=10_000_000, provider="sandbox")
    ticket = Ticket.objects.create(
        number="T-A11Y0001", user=alice, subject="A question", category="other"
    )
    ticket.messages.create(author=alice, body="How do lines work?")
    announcement_publish(
        announcement=Announcement.objects.create(
            title="A new model", kind="general", body="We **added** a model."
        )
    )
    return alice, token


def axe_violations(page):
    page.evaluate(AXE)
    results = page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => ("
        "{id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}"
        ")))"
    )
    return [v for v in results if v["impact"] in BLOCKING]


def report(path, violations):
    lines = [f"{path}:"]
    for v in violations:
        lines.append(f"  [{v['impact']}] {v['id']}: {v['help']} at {', '.join(v['nodes'][:5])}")
    return "\n".join(lines)


PUBLIC = ["/accounts/login/", "/accounts/signup/", "/accounts/password/reset/", "/pricing/",
          "/help/", "/announcements/"]  # fmt: skip
SIGNED_IN = [
    "/",
    "/tokens/",
    "/tokens/new/",
    "/logs/",
    "/logs/ips/",
    "/billing/",
    "/billing/recharge/",
    "/billing/orders/",
    "/pricing/",
    "/announcements/",
    "/support/",
    "/support/new/",
    "/support/T-A11Y0001/",
    "/profile/",
    "/help/",
]


def test_public_pages_have_no_serious_accessibility_problems(page):
    found = []
    for path in PUBLIC:
        page.open(path)
        violations = axe_violations(page)
        if violations:
            found.append(report(path, violations))
    assert not found, "\n".join(found)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_console_has_no_serious_accessibility_problems(page, customer, scheme):
    alice, token = customer
    page.emulate_media(color_scheme=scheme)
    sign_in(page, alice.email)
    found = []
    for path in [*SIGNED_IN, f"/tokens/{token.pk}/", f"/tokens/{token.pk}/edit/"]:
        page.open(path)
        page.wait_for_load_state("networkidle")
        violations = axe_violations(page)
        if violations:
            found.append(report(path, violations))
    assert not found, "\n".join(found)


def test_the_console_works_from_the_keyboard(page, customer):
    alice, _token = customer
    sign_in(page, alice.email)
    page.open("/")
    # The first Tab reaches the skip link, which takes focus past the navigation.
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent.trim()")
    assert focused == "Skip to content"
    assert page.evaluate("getComputedStyle(document.activeElement).left") != "-999px"
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")

    # Tabbing on from the top reaches the main navigation, each link visibly focused.
    page.open("/")
    seen = []
    for _ in range(15):
        page.keyboard.press("Tab")
        element = page.evaluate(
            "(() => { const e = document.activeElement; const s = getComputedStyle(e);"
            " return {text: e.textContent.trim(), outline: s.outlineStyle}; })()"
        )
        seen.append(element["text"])
        if element["text"] == "Tokens":
            assert element["outline"] != "none"
            page.keyboard.press("Enter")
            break
    page.wait_for_url("**/tokens/")
    assert "Dashboard" in seen

    # The account menu opens from the keyboard, and a form submits with Enter.
    page.locator("summary[aria-label='Account menu']").focus()
    page.keyboard.press("Enter")
    assert page.get_by_role("menuitem", name="Profile").is_visible()
    page.keyboard.press("Escape")
    page.open("/support/new/")
    page.get_by_label("Other").focus()
    page.keyboard.press("Space")
    page.get_by_label("Subject").focus()
    page.keyboard.type("Keyboard only")
    page.keyboard.press("Tab")
    page.keyboard.type("Sent without a mouse.")
    page.get_by_role("button", name="Open the ticket").focus()
    page.keyboard.press("Enter")
    page.get_by_text("opened. We answer here and by email.").wait_for()


def test_charts_say_in_words_what_they_show(page, customer):
    alice, _token = customer
    sign_in(page, alice.email)
    page.open("/")
    rpm = page.locator("#rpm-chart")
    assert rpm.get_attribute("role") == "img"
    label = rpm.get_attribute("aria-label")
    assert "30 requests and" in label and "busiest minute" in label
    assert "30 requests and" in page.locator("figcaption").first.inner_text()
    # The spend chart has its figures as a table.
    page.get_by_text("Show as a table").click()
    table = page.locator("details table")
    assert "gpt-4o-mini" in table.text_content()
    assert table.locator("tbody tr").count() >= 1
