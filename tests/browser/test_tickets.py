from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from console.support.models import Ticket
from tests.billing.test_orders import make_order
from tests.conftest import sign_in

pytestmark = pytest.mark.browser


@pytest.fixture
def screenshot_file(tmp_path):
    path = tmp_path / "payment.png"
    Image.new("RGB", (320, 200), "seagreen").save(path)
    return path


def test_a_late_recharge_becomes_a_ticket_with_a_screenshot_and_a_reply(
    page, alice, settings, tmp_path, screenshot_file
):
    settings.MEDIA_ROOT = tmp_path / "media"
    late = make_order(alice, created_at=timezone.now() - timedelta(minutes=15))
    sign_in(page, alice.email)
    page.open(reverse("billing:recharge"))
    page.get_by_role("link", name="Not credited? Open a ticket").click()
    page.get_by_role("heading", name="Open a ticket").wait_for()
    # The recharge questions show, with the order chosen; the others stay hidden.
    assert page.get_by_label("The order").input_value() == str(late.pk)
    assert not page.get_by_label("Expected volume").is_visible()
    page.get_by_label("Attachments").set_input_files(str(screenshot_file))
    page.get_by_label("What happened?").fill("Paid by card, the money left my account.")
    page.screenshot("new-ticket")
    page.get_by_role("button", name="Open the ticket").click()
    page.get_by_text("opened. We answer here and by email.").wait_for()
    ticket = Ticket.objects.get()
    assert page.url.endswith(ticket.get_absolute_url())
    assert page.get_by_role("link", name="payment.png").is_visible()

    # An empty reply is refused in place; a real one joins the thread without a reload.
    page.get_by_role("button", name="Send reply").click()
    page.get_by_text("This field is required.").wait_for()
    page.get_by_label("Your reply").fill("The bank reference is 4711.")
    page.get_by_role("button", name="Send reply").click()
    page.locator("#thread > li").nth(1).get_by_text("The bank reference is 4711.").wait_for()
    assert page.get_by_label("Your reply").input_value() == ""
    assert ticket.messages.count() == 2
    assert len(mail.outbox) == 2
    page.screenshot("thread")

    # Another category asks other questions.
    page.open(reverse("console:ticket_new"))
    page.get_by_label("Line access (training or enterprise)").check()
    assert page.get_by_label("Expected volume").is_visible()
    assert not page.get_by_label("The order").is_visible()
