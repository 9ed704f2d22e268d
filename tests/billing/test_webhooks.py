import json
import time

import pytest
import stripe
from django.urls import reverse

from billing.models import PaymentEvent, RechargeOrder
from billing.providers import SandboxProvider
from tests.billing.test_orders import make_order
from tests.conftest import balance_of, ledger_sum

SANDBOX_URL = reverse("billing:webhook", args=["sandbox"])
STRIPE_URL = reverse("billing:webhook", args=["stripe"])
STRIPE_SECRET = "whsec_test_secret"


@pytest.fixture
def sandbox(settings):
    settings.PAYMENTS_SANDBOX = True
    return SandboxProvider()


@pytest.fixture
def stripe_on(settings):
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_WEBHOOK_SECRET = STRIPE_SECRET


def post_sandbox(client, body, headers):
    return client.post(
        SANDBOX_URL,
        data=body,
        content_type="application/json",
        headers={k: v for k, v in headers.items()},
    )


def test_a_signed_sandbox_callback_credits_the_order(client, alice, sandbox):
    order = make_order(alice)
    body, headers = sandbox.signed_callback(order, succeeded=True)
    response = post_sandbox(client, body, headers)
    assert response.status_code == 200
    assert response.json() == {"outcome": "credited"}
    order.refresh_from_db()
    assert order.status == RechargeOrder.Status.CREDITED
    assert balance_of(alice) == 20_000_000 == ledger_sum(alice)


def test_a_replayed_callback_answers_200_and_credits_nothing_more(client, alice, sandbox):
    order = make_order(alice)
    body, headers = sandbox.signed_callback(order, succeeded=True)
    post_sandbox(client, body, headers)
    response = post_sandbox(client, body, headers)
    assert response.status_code == 200
    assert response.json() == {"outcome": "replay"}
    assert balance_of(alice) == 20_000_000
    assert PaymentEvent.objects.filter(outcome="replay", order=order).count() == 1


def test_a_second_event_for_a_credited_order_credits_nothing(client, alice, sandbox):
    order = make_order(alice)
    post_sandbox(client, *sandbox.signed_callback(order, succeeded=True))
    response = post_sandbox(client, *sandbox.signed_callback(order, succeeded=True))
    assert response.json() == {"outcome": "already_done"}
    assert balance_of(alice) == 20_000_000


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body, headers: (body.replace(b"20000000", b"90000000"), headers),
        lambda body, headers: (body, {}),
        lambda body, headers: (body, {"X-Sandbox-Signature": "t=1,v1=abc"}),
        lambda body, headers: (body, {"X-Sandbox-Signature": "garbage"}),
    ],
    ids=["changed-body", "no-signature", "stale-or-wrong", "malformed"],
)
def test_a_forged_callback_is_refused_with_400_and_logged(client, alice, sandbox, tamper):
    order = make_order(alice)
    body, headers = tamper(*sandbox.signed_callback(order, succeeded=True))
    response = post_sandbox(client, body, headers)
    assert response.status_code == 400
    assert balance_of(alice) == 0
    assert PaymentEvent.objects.get().outcome == "bad_signature"


def test_forged_callbacks_fill_no_table(settings, alice, sandbox):
    from django.test import Client

    settings.WEBHOOK_REJECTS_RECORDED_PER_HOUR = (3, 5)
    order = make_order(alice)
    body, _ = sandbox.signed_callback(order, succeeded=True)
    forger = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(10):
        assert post_sandbox(forger, body, {"X-Sandbox-Signature": "garbage"}).status_code == 400
    assert PaymentEvent.objects.filter(outcome="bad_signature").count() == 3
    # Other addresses have their own few rows, up to the total for the provider.
    for last in range(10):
        post_sandbox(Client(REMOTE_ADDR=f"198.51.100.{last}"), body, {})
    assert PaymentEvent.objects.filter(outcome="bad_signature").count() == 5
    # A real callback still goes through and is recorded.
    response = post_sandbox(forger, *sandbox.signed_callback(order, succeeded=True))
    assert response.json() == {"outcome": "credited"}


def test_replays_of_a_signed_event_get_a_few_rows_not_one_each(client, alice, sandbox):
    order = make_order(alice)
    body, headers = sandbox.signed_callback(order, succeeded=True)
    for _ in range(20):
        assert post_sandbox(client, body, headers).json()["outcome"] in {"credited", "replay"}
    assert PaymentEvent.objects.count() == 1 + 5
    assert balance_of(alice) == 20_000_000


def test_an_old_signature_is_refused(client, alice, sandbox):
    order = make_order(alice)
    body, headers = sandbox.signed_callback(
        order, succeeded=True, timestamp=int(time.time()) - 3600
    )
    assert post_sandbox(client, body, headers).status_code == 400


def test_an_unknown_order_is_acknowledged_and_logged(client, alice, sandbox):
    order = make_order(alice)
    order.number = "R20990101-NOPE22"
    response = post_sandbox(client, *sandbox.signed_callback(order, succeeded=True))
    assert response.status_code == 200
    assert response.json() == {"outcome": "unknown_order"}
    assert balance_of(alice) == 0


def test_an_amount_that_does_not_match_is_not_credited(client, alice, sandbox):
    order = make_order(alice)
    order.amount = 90_000_000
    response = post_sandbox(client, *sandbox.signed_callback(order, succeeded=True))
    assert response.json() == {"outcome": "amount_mismatch"}
    event = PaymentEvent.objects.get()
    assert "Paid $90.00 for an order of $20.00" in event.detail
    assert balance_of(alice) == 0


def test_a_failed_payment_marks_the_order_failed(client, alice, sandbox):
    order = make_order(alice)
    post_sandbox(client, *sandbox.signed_callback(order, succeeded=False))
    order.refresh_from_db()
    assert order.status == RechargeOrder.Status.FAILED


def test_the_sandbox_webhook_does_not_exist_when_the_sandbox_is_off(client, alice, settings):
    settings.PAYMENTS_SANDBOX = False
    order = make_order(alice)
    body, headers = SandboxProvider().signed_callback(order, succeeded=True)
    assert post_sandbox(client, body, headers).status_code == 404


def stripe_event(order, event_type="checkout.session.completed", **session):
    return json.dumps(
        {
            "id": f"evt_{order.number}_{event_type}",
            "object": "event",
            "type": event_type,
            "data": {
                "object": {
                    "id": "cs_test_1",
                    "object": "checkout.session",
                    "client_reference_id": order.number,
                    "amount_total": order.amount // 10_000,
                    "currency": "usd",
                    "payment_status": "paid",
                    "status": "complete",
                    "payment_intent": "pi_123",
                    **session,
                }
            },
        }
    )


def post_stripe(client, payload, signature):
    return client.post(
        STRIPE_URL,
        data=payload,
        content_type="application/json",
        headers={"Stripe-Signature": signature},
    )


def test_a_stripe_webhook_signed_with_the_real_scheme_credits_the_order(client, alice, stripe_on):
    order = make_order(alice, provider="stripe")
    payload = stripe_event(order)
    signature = stripe.WebhookSignature.generate_signature_header(payload, STRIPE_SECRET)
    response = post_stripe(client, payload, signature)
    assert response.status_code == 200, response.content
    order.refresh_from_db()
    assert order.status == RechargeOrder.Status.CREDITED
    assert order.payment_reference == "pi_123"
    assert balance_of(alice) == 20_000_000


def test_a_stripe_webhook_with_another_secret_is_refused(client, alice, stripe_on):
    order = make_order(alice, provider="stripe")
    payload = stripe_event(order)
    signature = stripe.WebhookSignature.generate_signature_header(payload, "whsec_other")
    assert post_stripe(client, payload, signature).status_code == 400
    assert balance_of(alice) == 0


def test_an_unpaid_checkout_completion_waits_for_the_async_payment(client, alice, stripe_on):
    order = make_order(alice, provider="stripe")
    payload = stripe_event(order, payment_status="unpaid")
    signature = stripe.WebhookSignature.generate_signature_header(payload, STRIPE_SECRET)
    assert post_stripe(client, payload, signature).json() == {"outcome": "ignored"}
    payload = stripe_event(order, "checkout.session.async_payment_succeeded")
    signature = stripe.WebhookSignature.generate_signature_header(payload, STRIPE_SECRET)
    assert post_stripe(client, payload, signature).json() == {"outcome": "credited"}


def test_a_payment_in_another_currency_is_not_credited(client, alice, stripe_on):
    order = make_order(alice, provider="stripe")
    payload = stripe_event(order, currency="eur")
    signature = stripe.WebhookSignature.generate_signature_header(payload, STRIPE_SECRET)
    assert post_stripe(client, payload, signature).json() == {"outcome": "amount_mismatch"}


def test_stripe_is_not_offered_without_its_secrets(client, alice_client, settings):
    settings.STRIPE_SECRET_KEY = ""
    settings.PAYMENTS_SANDBOX = True
    html = alice_client.get(reverse("billing:recharge")).content.decode()
    assert "Sandbox (test payment)" in html
    assert "Card (Stripe)" not in html
