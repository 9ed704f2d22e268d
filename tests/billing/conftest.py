import pytest

from tests.fake_stripe import FakeStripe


@pytest.fixture
def fake_stripe(settings):
    """A local stand-in for Stripe's API (tests/fake_stripe.py), which the settings point to."""
    fake = FakeStripe().start()
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test"
    settings.STRIPE_API_BASE = fake.url
    yield fake
    fake.stop()
