import re

import pytest
from django.core import mail

pytestmark = pytest.mark.browser


def test_a_new_user_signs_up_verifies_by_email_and_lands_on_the_dashboard(page):
    page.open("/accounts/signup/")
    page.screenshot("signup")
    page.get_by_label("Email").fill("newcomer@example.com")
    page.get_by_label("Password", exact=True).fill("a-long-enough-secret")
    page.get_by_label("Password (again)").fill("a-long-enough-secret")
    page.get_by_role("button", name="Sign up").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    page.screenshot("check-email")

    assert len(mail.outbox) == 1
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+/", mail.outbox[0].body).group(0)
    page.open("/" + link.split("/", 3)[3])
    page.get_by_role("heading", name="Confirm your email address").wait_for()
    page.get_by_role("button", name="Confirm").click()

    page.get_by_role("heading", name="Get started in three steps").wait_for()
    assert page.url.rstrip("/") == page.base_url
    page.screenshot("dashboard")
