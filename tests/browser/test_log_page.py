"""The request log in a browser: the table fits a laptop's window, model names stay whole, the
pace of the selection is charted, and a pasted request id opens its breakdown."""

import dataclasses
from datetime import timedelta

import pytest
from django.utils import timezone

from logs.writer import write_batch
from tests.conftest import sign_in
from tests.logs.test_pages import make_record
from tokens.services import token_create

pytestmark = pytest.mark.browser

LONG_MODELS = [
    "claude-3-5-sonnet-20241022",
    "gemini-2.0-flash-thinking-exp",
    "gpt-4o-mini-2024-07-18",
    "text-embedding-3-small",
]


@pytest.fixture
def busy_log(alice, default_line):
    """Rows as wide as they come: long model and token names, millions of tokens, a big cost,
    slow answers, an IPv6 address, failures with an error code, an endpoint other than chat."""
    token, _key = token_create(
        user=alice, name="production-backend-eu-west", line=default_line, notify=False
    )
    now = timezone.now()
    records = []
    for i, model in enumerate(LONG_MODELS * 3):
        record = make_record(
            alice,
            token,
            at=now - timedelta(seconds=10 * i),
            model=model,
            prompt=1_234_567 + i,
            completion=987_654,
            cost=123_456_789,
            ip="2001:db8:85a3:1234:5678:8a2e:370:7334" if i % 2 else "203.0.113.250",
            status=502 if i % 5 == 4 else 200,
        )
        records.append(
            dataclasses.replace(
                record,
                latency_ms=123_456,
                ttft_ms=12_345,
                endpoint="embedding" if model.startswith("text-") else "chat",
                cost=0 if record.status >= 400 else record.cost,
            )
        )
    write_batch(records)
    return records


def table_fit(page):
    return page.evaluate(
        """() => {
          const table = document.querySelector('.log-table');
          const wrap = table.closest('.table-wrap');
          const broken = [...document.querySelectorAll('.log-model')]
            .filter(name => name.getClientRects().length !== 1)  // one box per line it spans
            .map(name => name.textContent);
          return {scroll: table.scrollWidth, room: wrap.clientWidth, broken: broken};
        }"""
    )


def test_the_log_table_fits_1280_px_with_model_names_whole(page, alice, busy_log):
    sign_in(page, alice.email)
    page.open("/logs/")
    page.locator(".log-table").wait_for()
    fit = table_fit(page)
    assert fit["scroll"] <= fit["room"], f"the table is {fit['scroll'] - fit['room']}px too wide"
    assert fit["broken"] == []
    # Every row's breakdown button is in view, not clipped behind a sideways scroll.
    button = page.get_by_role("link", name="Breakdown").first.bounding_box()
    assert button["x"] + button["width"] <= 1280
    page.screenshot("1280-light")
    page.emulate_media(color_scheme="dark")
    page.screenshot("1280-dark")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_phone_layout_stacks_the_rows(page, alice, busy_log, scheme):
    page.set_viewport_size({"width": 390, "height": 844})
    page.emulate_media(color_scheme=scheme)
    sign_in(page, alice.email)
    page.open("/logs/")
    page.locator(".log-table").wait_for()
    assert page.locator(".log-table thead").is_hidden()
    fit = table_fit(page)
    assert fit["scroll"] <= fit["room"], f"the table is {fit['scroll'] - fit['room']}px too wide"
    page.screenshot(f"390-{scheme}")


def test_the_log_page_charts_the_pace_of_its_selection(page, alice, busy_log):
    sign_in(page, alice.email)
    page.open("/logs/?period=1h&model=gpt-4o-mini-2024-07-18")
    page.locator("#rpm-chart").wait_for()
    page.wait_for_function("window.Chart && Chart.getChart('rpm-chart')")
    drawn = "Chart.getChart('rpm-chart').data.datasets[0].data.reduce((a, b) => a + b, 0)"
    assert page.evaluate(drawn) == 3  # the model's rows only, not all twelve
    assert "3 requests" in page.locator(".pace-figures").inner_text()


def test_a_pasted_request_id_opens_its_breakdown(page, alice, busy_log):
    sign_in(page, alice.email)
    page.open("/logs/")
    page.get_by_label("Find a request by its id").fill(f"  {busy_log[3].id} ")
    page.get_by_role("button", name="Open").click()
    page.get_by_role("heading", name="Cost breakdown").wait_for()
    assert str(busy_log[3].id) in page.locator(".breakdown").inner_text()
    page.open("/logs/")
    page.get_by_label("Find a request by its id").fill("req_12345")
    page.get_by_role("button", name="Open").click()
    assert "is not a request id" in page.get_by_role("alert").inner_text()
