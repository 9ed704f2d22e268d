from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from billing import services
from billing.models import RechargeOrder
from tests.conftest import balance_of


def test_recharging_by_card_sends_the_user_to_stripe_checkout(alice_client, alice, fake_stripe):
    response = alice_client.post(
        reverse("billing:recharge"), {"amount": "25.50", "provider": "stripe"}
    )
    order = RechargeOrder.objects.get(user=alice)
    session = fake_stripe.sessions[order.provider_reference]
    assert response.status_code == 302
    assert response.url == session["url"]
    assert session["amount_total"] == 2550
    assert session["client_reference_id"] == order.number


def test_a_pending_card_order_is_reconciled_by_asking_stripe(alice, fake_stripe):
    order = services.order_create(user=alice, amount=20_000_000, provider="stripe")
    from billing.providers import get_provider

    get_provider("stripe").start(order, request=None)
    RechargeOrder.objects.filter(pk=order.pk).update(
        created_at=timezone.now() - timedelta(minutes=5)
    )
    assert services.orders_reconcile()["credited"] == 0  # not paid yet
    fake_stripe.pay(order.provider_reference)
    assert services.orders_reconcile()["credited"] == 1
    assert services.orders_reconcile()["checked"] == 0
    order.refresh_from_db()
    assert order.status == RechargeOrder.Status.CREDITED
    assert order.payment_reference.startswith("pi_")
    assert order.events.get().event_type == "reconcile"
    assert balance_of(alice) == 20_000_000


def test_refunding_a_card_order_refunds_it_at_stripe(alice, charlie, fake_stripe):
    from billing.providers import get_provider

    order = services.order_create(user=alice, amount=20_000_000, provider="stripe")
    get_provider("stripe").start(order, request=None)
    session = fake_stripe.pay(order.provider_reference)
    services.order_credit(order=order, payment_reference=session["payment_intent"])
    services.order_refund(order=order, staff_user=charlie, reason="asked")
    assert fake_stripe.refunds == [{"payment_intent": session["payment_intent"]}]
    assert balance_of(alice) == 0


def test_when_stripe_does_not_answer_the_user_is_told_and_nothing_is_charged(
    alice_client, alice, settings
):
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test"
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens there
    response = alice_client.post(
        reverse("billing:recharge"), {"amount": "20", "provider": "stripe"}, follow=True
    )
    assert "Card (Stripe) did not answer, so nothing was charged." in response.content.decode()
    assert RechargeOrder.objects.get(user=alice).status == RechargeOrder.Status.FAILED
