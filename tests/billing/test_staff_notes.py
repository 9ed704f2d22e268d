"""Staff who move a user's money write two texts: an internal reason, which stays among staff,
and a note to the customer, which the user reads next to the amount. The reason never reaches
a page or an email of the user's."""

import pytest
from django.core import mail
from django.urls import reverse

from billing.models import LedgerEntry, RechargeOrder
from console.support.models import Ticket
from tests.billing.test_admin import run_action
from tests.billing.test_orders import make_order
from tests.conftest import balance_of

REASON = "Internal: KYC flag 7731, cleared by Dana"
NOTE = "Your bank transfer arrived late; we credited it by hand."


@pytest.fixture(autouse=True)
def sandbox(settings):
    settings.PAYMENTS_SANDBOX = True


def what_the_user_sees(client, user):
    """Every page of the user's that shows money, orders or tickets, and their emails."""
    pages = [
        reverse("billing:balance"),
        reverse("billing:balance") + "?kind=adjustment",
        reverse("billing:balance") + "?kind=recharge",
        reverse("billing:orders"),
        reverse("billing:recharge"),
        reverse("console:dashboard"),
        reverse("console:tickets"),
        *(order.get_absolute_url() for order in RechargeOrder.objects.filter(user=user)),
        *(ticket.get_absolute_url() for ticket in Ticket.objects.filter(user=user)),
    ]
    seen = []
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        seen.append(response.content.decode())
    seen += [f"{m.subject}\n{m.body}" for m in mail.outbox if user.email in m.to]
    return "\n".join(seen)


def test_the_forms_say_which_text_the_user_reads(staff_client, alice):
    order = make_order(alice)
    url = reverse("admin:billing_rechargeorder_changelist")
    asked = staff_client.post(url, {"action": "credit_by_hand", "_selected_action": [order.pk]})
    html = asked.content.decode()
    assert "Note to the customer — shown in their balance history" in html
    assert "Internal reason — staff only" in html
    url = reverse("admin:billing_account_changelist")
    asked = staff_client.post(url, {"action": "adjust_balance", "_selected_action": [alice.pk]})
    html = asked.content.decode()
    assert "Note to the customer — shown in their balance history" in html
    assert "Internal reason — staff only" in html


def test_a_balance_adjustment_shows_the_user_the_note_and_keeps_the_reason(
    staff_client, alice_client, alice
):
    run_action(
        staff_client,
        "account",
        "adjust_balance",
        [alice.pk],
        amount="5",
        reason=REASON,
        note="A goodwill credit for the outage on Monday.",
    )
    entry = LedgerEntry.objects.get(account__user=alice)
    assert (entry.amount, entry.reason) == (5_000_000, REASON)
    seen = what_the_user_sees(alice_client, alice)
    assert "A goodwill credit for the outage on Monday." in seen
    assert REASON not in seen


def test_without_a_note_the_user_reads_a_plain_default(staff_client, alice_client, alice):
    run_action(staff_client, "account", "adjust_balance", [alice.pk], amount="5", reason=REASON)
    run_action(staff_client, "account", "adjust_balance", [alice.pk], amount="-1", reason=REASON)
    assert balance_of(alice) == 4_000_000
    seen = what_the_user_sees(alice_client, alice)
    assert "Added by support." in seen and "Corrected by support." in seen
    assert REASON not in seen


def test_an_order_credited_by_hand_in_the_order_admin_keeps_its_reason_among_staff(
    staff_client, alice_client, alice
):
    order = make_order(alice)
    run_action(
        staff_client, "rechargeorder", "credit_by_hand", [order.pk], reason=REASON, note=NOTE
    )
    order.refresh_from_db()
    assert order.status == RechargeOrder.Status.CREDITED
    assert order.actions.get().reason == REASON
    seen = what_the_user_sees(alice_client, alice)
    assert NOTE in seen and REASON not in seen


def test_an_order_credited_from_a_ticket_files_the_reason_as_an_internal_note(
    staff_client, alice_client, alice
):
    order = make_order(alice)
    ticket = Ticket.objects.create(
        number="T-NOTES1", user=alice, subject="Not credited", category="recharge", order=order
    )
    credit = reverse("admin:support_ticket_credit_order", args=[ticket.pk])
    confirm = staff_client.get(credit).content.decode()
    assert "Note to the customer — shown in their balance history" in confirm
    assert "Internal reason — staff only" in confirm
    staff_client.post(credit, {"reason": REASON, "note": NOTE})
    order.refresh_from_db()
    assert order.status == RechargeOrder.Status.CREDITED
    internal = ticket.messages.get()
    assert internal.internal and REASON in internal.body and NOTE in internal.body
    staff_page = staff_client.get(reverse("admin:support_ticket_change", args=[ticket.pk]))
    assert REASON in staff_page.content.decode()
    seen = what_the_user_sees(alice_client, alice)
    assert NOTE in seen and REASON not in seen


def test_an_order_credited_from_a_ticket_without_a_note_reads_a_default(
    staff_client, alice_client, alice
):
    order = make_order(alice)
    ticket = Ticket.objects.create(
        number="T-NOTES2", user=alice, subject="Not credited", category="recharge", order=order
    )
    staff_client.post(
        reverse("admin:support_ticket_credit_order", args=[ticket.pk]), {"reason": REASON}
    )
    seen = what_the_user_sees(alice_client, alice)
    assert "Credited by support once your payment was confirmed." in seen
    assert REASON not in seen


def test_an_order_marked_failed_shows_the_note_not_the_reason(staff_client, alice_client, alice):
    order = make_order(alice)
    run_action(
        staff_client,
        "rechargeorder",
        "mark_failed",
        [order.pk],
        reason=REASON,
        note="Your card was declined.",
    )
    order.refresh_from_db()
    assert order.status == RechargeOrder.Status.FAILED
    assert order.actions.get().reason == REASON
    seen = what_the_user_sees(alice_client, alice)
    assert "Your card was declined." in seen and REASON not in seen


def test_a_refund_shows_the_user_a_default_note_not_the_reason(staff_client, alice_client, alice):
    order = make_order(alice)
    run_action(staff_client, "rechargeorder", "credit_by_hand", [order.pk], reason="paid")
    response = run_action(staff_client, "rechargeorder", "refund", [order.pk], reason=REASON)
    assert "Refund: 1 done." in response.content.decode()
    seen = what_the_user_sees(alice_client, alice)
    assert "Refunded by support." in seen and REASON not in seen
