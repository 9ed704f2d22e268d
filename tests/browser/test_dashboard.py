from datetime import timedelta

import pytest
from django.utils import timezone

from billing.services import balance_credit
from logs.writer import write_batch
from tests.conftest import sign_in
from tests.logs.test_pages import make_record
from tokens.services import token_create

pytestmark = pytest.mark.browser


def test_the_dashboard_refreshes_itself_and_the_balance_within_the_csp(page, alice, default_line):
    token, _key = token_create(user=alice, name="Backend", line=default_line, notify=False)
    now = timezone.now()
    write_batch([make_record(alice, token, at=now - timedelta(minutes=m)) for m in range(5)])
    sign_in(page, alice.email)
    page.open("/")
    page.get_by_text("5 requests and").first.wait_for()
    write_batch([make_record(alice, token, at=now)])
    balance_credit(user=alice, amount=7_000_000, kind="adjustment")
    # The refresh runs every 15 seconds and when the tab becomes visible again.
    with page.expect_response(lambda r: "/dashboard/live/" in r.url):
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    page.get_by_text("6 requests and").first.wait_for()
    assert page.locator(".balance-chip").inner_text().endswith("$7.00")
    # Chart.js sizes its canvas with a style attribute; swapping the canvas must not copy it
    # through setAttribute, which the CSP refuses (the page fixture fails on the error).
    page.wait_for_timeout(300)
    assert page.errors == []
    # The chart is drawn again from the new figures, and the range selector stays.
    drawn = "Chart.getChart('rpm-chart')?.data.datasets[0].data.reduce((a, b) => a + b, 0)"
    assert page.evaluate(drawn) == 6
    assert page.locator("#live nav.segmented a").all_inner_texts() == ["1h", "6h", "24h"]
