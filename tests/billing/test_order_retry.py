"""A failed or expired order says what happened and offers to try again with the same amount
and payment method: a POST, with CSRF, for the order's owner only."""

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing import services
from billing.models import RechargeOrder
from tests.billing.test_orders import make_order

Status = RechargeOrder.Status


@pytest.fixture(autouse=True)
def sandbox(settings):
    settings.PAYMENTS_SANDBOX = True


def failed_order(user, amount=21_000_000):
    order = make_order(user, amount=amount)
    services.order_mark_failed(order=order, reason="Payment failed.")
    return order


def retry(client, order):
    return client.post(reverse("billing:order_retry", args=[order.number]))


def test_a_failed_order_says_nothing_was_charged_and_offers_to_try_again(alice_client, alice):
    order = failed_order(alice)
    html = alice_client.get(order.get_absolute_url()).content.decode()
    assert "This payment did not go through." in html
    assert "Nothing was charged, and nothing was added to your balance." in html
    assert "Nothing: this order was not paid" in html
    assert "when paid" not in html and "Credited in total</dt><dd>—" not in html
    assert f'action="{reverse("billing:order_retry", args=[order.number])}"' in html
    assert "Try again: $21.00 by Sandbox" in html


def test_an_expired_order_warns_that_a_late_payment_is_still_credited(alice_client, alice):
    """Expired means no word from the provider in time, not unpaid: paying again could pay
    twice."""
    order = make_order(alice)
    assert services.order_expire(order=order)
    html = alice_client.get(order.get_absolute_url()).content.decode()
    assert "This order expired before a payment reached us." in html
    assert "If you did pay, it is still credited when the payment arrives" in html
    assert "Nothing was charged" not in html
    assert "Try again" in html


def test_a_pending_order_says_what_it_will_credit_and_offers_no_retry(alice_client, alice):
    order = make_order(alice)
    html = alice_client.get(order.get_absolute_url()).content.decode()
    assert "Not yet: $20.00 once the payment arrives" in html
    assert "Try again" not in html


def test_trying_again_starts_a_new_order_of_the_same_amount_and_method(alice_client, alice):
    order = failed_order(alice)
    response = retry(alice_client, order)
    again = RechargeOrder.objects.exclude(pk=order.pk).get()
    assert (again.user, again.amount, again.provider, again.status) == (
        alice,
        21_000_000,
        "sandbox",
        Status.PENDING,
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("billing:sandbox_pay", args=[again.number])
    order.refresh_from_db()
    assert order.status == Status.FAILED  # the old order stays in the history as it was


def test_the_orders_list_offers_to_try_a_failed_order_again(alice_client, alice):
    order = failed_order(alice)
    html = alice_client.get(reverse("billing:orders")).content.decode()
    assert f'action="{reverse("billing:order_retry", args=[order.number])}"' in html


def test_another_users_order_cannot_be_tried_again(bob_client, alice):
    order = failed_order(alice)
    assert retry(bob_client, order).status_code == 404
    assert RechargeOrder.objects.count() == 1


def test_trying_again_needs_a_post_with_csrf(alice, alice_client):
    order = failed_order(alice)
    url = reverse("billing:order_retry", args=[order.number])
    assert alice_client.get(url).status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post(url).status_code == 403
    assert RechargeOrder.objects.count() == 1


def test_a_credited_order_is_not_tried_again(alice_client, alice):
    order = make_order(alice)
    services.order_credit(order=order)
    response = retry(alice_client, order)
    assert response["Location"] == order.get_absolute_url()
    assert RechargeOrder.objects.count() == 1
    page = alice_client.get(order.get_absolute_url()).content.decode()
    assert "there is nothing to try again" in page


def test_a_method_no_longer_offered_sends_the_user_to_choose_another(alice_client, alice, settings):
    order = failed_order(alice)
    settings.PAYMENTS_SANDBOX = False
    response = retry(alice_client, order)
    assert response["Location"] == reverse("billing:recharge")
    assert RechargeOrder.objects.count() == 1
    page = alice_client.get(response["Location"]).content.decode()
    assert "is not available any more. Recharge $21.00 with another way to pay." in page


def test_an_amount_outside_todays_limits_is_refused_in_words(alice_client, alice, settings):
    order = failed_order(alice)
    settings.RECHARGE_MAX = 10_000_000
    response = retry(alice_client, order)
    assert response["Location"] == reverse("billing:recharge")
    assert RechargeOrder.objects.count() == 1
    assert "Recharge between" in alice_client.get(response["Location"]).content.decode()


def test_an_expired_order_tried_again_is_a_new_pending_order(alice_client, alice):
    order = make_order(alice, created_at=timezone.now())
    services.order_expire(order=order)
    retry(alice_client, order)
    assert RechargeOrder.objects.filter(status=Status.PENDING).count() == 1
