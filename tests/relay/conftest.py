import time

import openai
import pytest

from billing import services
from billing.models import LedgerEntry
from relay.models import Channel
from tokens.services import token_create

MODELS = ["gpt-4o-mini", "text-embedding-3-small", "gpt-3.5-turbo-instruct"]


def wait_until(predicate, timeout=5.0, message="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def quick_flush(settings):
    settings.GATEWAY_FLUSH_SECONDS = 0.05


def make_channel(upstream, name="primary", *, models=MODELS, lines=("default",), **fields):
    from billing.models import Line

    channel = Channel(
        name=name,
        type=Channel.Type.OPENAI,
        base_url=upstream.url,
        model_names=list(models),
        **fields,
    )
    channel.set_key(upstream.key)
    channel.save()
    channel.lines.set(Line.objects.filter(name__in=lines))
    return channel


@pytest.fixture
def channel(upstream, prices, default_line):
    return make_channel(upstream)


@pytest.fixture
def funded(alice):
    services.balance_credit(user=alice, amount=10_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    return alice


@pytest.fixture
def token_and_key(funded, default_line):
    return token_create(user=funded, name="backend", line=default_line, notify=False)


@pytest.fixture
def api(live_site, token_and_key, channel):
    _token, key = token_and_key
    return openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)


@pytest.fixture
def refusals():
    """PostgreSQL refusing on demand; whatever a test left refused is allowed again after it."""
    from tests.relay.refusals import Refusals

    refuse = Refusals()
    yield refuse
    refuse.none()
