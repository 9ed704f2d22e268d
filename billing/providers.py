"""Payment providers behind one small interface.

A provider starts a payment (returns where to send the user), turns a callback into a verified
PaymentUpdate (or raises InvalidSignature), tells the state of an order when asked, and
refunds. billing.services applies the updates, once per event id.
"""

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import stripe
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from django.utils.crypto import salted_hmac

if TYPE_CHECKING:
    from stripe._base_address import BaseAddresses  # the type of StripeClient's base_addresses

MICROS_PER_CENT = 10_000


class InvalidSignature(Exception):
    pass


@dataclass(frozen=True)
class PaymentUpdate:
    """What a provider says about one order. status: "paid", "failed", "expired" or None."""

    event_id: str | None
    event_type: str
    order_number: str | None
    status: str | None
    amount: int | None = None  # micro-dollars paid
    payment_reference: str = ""


class RefundDeclined(Exception):
    """The provider answered that it did not refund (and will not, asked the same way). Any
    other error from a refund leaves its outcome unknown."""


class Provider:
    name = ""
    label = ""
    description = ""

    def is_configured(self):
        return True

    def start(self, order, request):
        """Returns the URL to send the user to for paying `order`."""
        raise NotImplementedError

    def parse_webhook(self, request):
        raise NotImplementedError

    def fetch(self, order):
        """The provider's view of `order` as a PaymentUpdate, or None if it cannot tell."""
        return None

    def refund(self, order, *, attempt=0):
        """Refunds `order` once, however often it is asked with the same `attempt`; raises
        RefundDeclined when the provider says no."""
        raise NotImplementedError


class SandboxProvider(Provider):
    """A pretend payment processor for development and the demo.

    Its "pay" page sends a signed callback to our own webhook URL, so the demo goes through
    exactly the code that real payments take. Never enable it in production.
    """

    name = "sandbox"
    label = "Sandbox (test payment)"
    description = "A pretend payment for trying the site. No money moves."
    header = "X-Sandbox-Signature"
    tolerance = 300

    def is_configured(self):
        return settings.PAYMENTS_SANDBOX

    @property
    def secret(self):
        return (
            settings.SANDBOX_PAYMENT_SECRET
            or salted_hmac("billing.sandbox", "webhook", algorithm="sha256").hexdigest()
        )

    def start(self, order, request):
        return reverse("billing:sandbox_pay", args=[order.number])

    def signed_callback(self, order, *, succeeded, timestamp=None):
        """The body and headers of the callback the sandbox sends for `order`."""
        body = json.dumps(
            {
                "id": f"evt_sbx_{secrets.token_hex(12)}",
                "type": "payment.succeeded" if succeeded else "payment.failed",
                "order": order.number,
                "amount": order.amount,
                "currency": "usd",
            }
        ).encode()
        return body, {self.header: self.signature(body, timestamp or int(time.time()))}

    def signature(self, body, timestamp):
        mac = hmac.new(self.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
        return f"t={timestamp},v1={mac.hexdigest()}"

    def parse_webhook(self, request):
        header = request.headers.get(self.header, "")
        parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        try:
            timestamp = int(parts.get("t", ""))
        except ValueError:
            raise InvalidSignature("missing or malformed signature header") from None
        if abs(time.time() - timestamp) > self.tolerance:
            raise InvalidSignature("signature timestamp outside the tolerance")
        expected = self.signature(request.body, timestamp)
        if not hmac.compare_digest(expected, header):
            raise InvalidSignature("signature does not match")
        try:
            event = json.loads(request.body)
            status = {"payment.succeeded": "paid", "payment.failed": "failed"}.get(event["type"])
            return PaymentUpdate(
                event_id=str(event["id"]),
                event_type=str(event["type"]),
                order_number=str(event["order"]),
                status=status,
                amount=int(event["amount"]),
                payment_reference=str(event["id"]),
            )
        except (ValueError, KeyError, TypeError):
            raise InvalidSignature("signed body is not a sandbox event") from None

    def refund(self, order, *, attempt=0):
        """The sandbox moved no money, so there is nothing to give back at the provider."""


class StripeProvider(Provider):
    """Stripe Checkout: a hosted payment page, confirmed by a signed webhook."""

    name = "stripe"
    label = "Card (Stripe)"
    description = "Pay by card on Stripe's secure checkout page."

    def is_configured(self):
        return bool(settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET)

    @property
    def client(self):
        if not self.is_configured():
            raise ImproperlyConfigured(
                "Stripe needs STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET to be set."
            )
        base: BaseAddresses | None = None
        if settings.STRIPE_API_BASE:
            base = {"api": settings.STRIPE_API_BASE}
        return stripe.StripeClient(
            settings.STRIPE_SECRET_KEY, base_addresses=base, max_network_retries=2
        )

    def start(self, order, request):
        if order.amount % MICROS_PER_CENT:
            raise ValueError("Stripe charges whole cents")
        order_url = settings.SITE_URL + order.get_absolute_url()
        session = self.client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "client_reference_id": order.number,
                "metadata": {"order": order.number},
                "customer_email": order.user.email,
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": "usd",
                            "unit_amount": order.amount // MICROS_PER_CENT,
                            "product_data": {"name": f"{settings.SITE_NAME} balance recharge"},
                        },
                    }
                ],
                "success_url": order_url + "?paid=1",
                "cancel_url": order_url,
            },
            options={"idempotency_key": f"order-{order.number}"},
        )
        order.provider_reference = session.id
        order.save(update_fields=["provider_reference"])
        return session.url

    def parse_webhook(self, request):
        try:
            event = stripe.Webhook.construct_event(
                request.body,
                request.headers.get("Stripe-Signature"),
                settings.STRIPE_WEBHOOK_SECRET,
            )
        except (stripe.SignatureVerificationError, ValueError) as error:
            raise InvalidSignature(str(error)) from None
        return self._update(event.id, event.type, event.data.object)

    def fetch(self, order):
        if not order.provider_reference:
            return None
        session = self.client.v1.checkout.sessions.retrieve(order.provider_reference)
        return self._update(None, "reconcile", session)

    def refund(self, order, *, attempt=0):
        if not order.payment_reference:
            raise RefundDeclined(f"order {order.number} has no Stripe payment to refund")
        # Stripe answers a repeated key with its first answer for a day: a new attempt after
        # a refusal needs a key of its own, the same attempt asked again must not.
        try:
            self.client.v1.refunds.create(
                params={"payment_intent": order.payment_reference},
                options={"idempotency_key": f"refund-{order.number}-{attempt}"},
            )
        except stripe.StripeError as error:
            if error.code == "charge_already_refunded":  # an earlier attempt did it
                return
            if error.http_status is not None and 400 <= error.http_status < 500:
                raise RefundDeclined(error.user_message or str(error)) from error
            raise  # no answer, or Stripe's own failure: it may have refunded

    @staticmethod
    def _update(event_id, event_type, stripe_object):
        session = stripe_object.to_dict()
        if session.get("object") != "checkout.session":
            return PaymentUpdate(event_id, event_type, None, None)
        status = None
        if event_type in {"checkout.session.completed", "reconcile"}:
            if session.get("payment_status") == "paid":
                status = "paid"
            elif session.get("status") == "expired":
                status = "expired"
        elif event_type == "checkout.session.async_payment_succeeded":
            status = "paid"
        elif event_type == "checkout.session.async_payment_failed":
            status = "failed"
        elif event_type == "checkout.session.expired":
            status = "expired"
        cents = session.get("amount_total")
        if (session.get("currency") or "").lower() != "usd":
            cents = None  # never equal to an order amount: flagged as a mismatch
        return PaymentUpdate(
            event_id=event_id,
            event_type=event_type,
            order_number=session.get("client_reference_id"),
            status=status,
            amount=cents * MICROS_PER_CENT if cents is not None else None,
            payment_reference=session.get("payment_intent") or "",
        )


PROVIDERS = {provider.name: provider for provider in (StripeProvider(), SandboxProvider())}


def get_provider(name):
    return PROVIDERS[name]


def enabled_providers():
    return [provider for provider in PROVIDERS.values() if provider.is_configured()]
