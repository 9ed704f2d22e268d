"""Image models at /v1/images/generations, through the official openai package: one image a
request, charged the model's price per call, and refused anywhere else before money is held."""

import base64

import openai
import pytest

from billing.models import ModelPrice
from logs.models import RequestLog
from relay.models import Channel
from tests.conftest import balance_of, ledger_sum
from tests.relay.conftest import make_channel, wait_until

DALL_E = 40_000  # micro-dollars a call: $0.04


@pytest.fixture
def image_price(prices):
    return ModelPrice.objects.create(
        model="dall-e-3",
        vendor="OpenAI",
        kind=ModelPrice.Kind.IMAGE,
        pricing=ModelPrice.Pricing.PER_CALL,
        call_price=DALL_E,
    )


@pytest.fixture
def image_channel(upstream, image_price, default_line):
    return make_channel(upstream, "images", models=["dall-e-3"])


@pytest.fixture
def simulated(image_price, default_line):
    channel = Channel(name="simulated", type=Channel.Type.SIMULATOR, model_names=["dall-e-3"])
    channel.save()
    channel.lines.set([default_line])
    return channel


def settled(user, balance):
    wait_until(lambda: balance_of(user) == balance, message="settlement")
    assert ledger_sum(user) == balance


def test_an_image_is_made_charged_its_price_and_logged(api, upstream, alice, image_channel):
    raw = api.images.with_raw_response.generate(
        model="dall-e-3", prompt="A lighthouse at dawn", response_format="b64_json"
    )
    image = base64.b64decode(raw.parse().data[0].b64_json)
    assert image.startswith(b"\x89PNG")
    sent = upstream.received[-1]
    assert (sent["path"], sent["payload"]["model"]) == ("/v1/images/generations", "dall-e-3")
    row = wait_until(lambda: RequestLog.objects.filter(id=raw.headers["x-request-id"]).first())
    assert (row.endpoint, row.status, row.cost, row.call_price, row.per_call) == (
        "image",
        200,
        DALL_E,
        DALL_E,
        True,
    )
    settled(alice, 10_000_000 - DALL_E)


def test_the_simulator_draws_a_real_png(api, alice, simulated):
    result = api.images.generate(model="dall-e-3", prompt="A red square")
    image = base64.b64decode(result.data[0].b64_json)
    assert image.startswith(b"\x89PNG\r\n\x1a\n") and b"IHDR" in image and b"IEND" in image
    linked = api.images.generate(model="dall-e-3", prompt="A red square", response_format="url")
    assert linked.data[0].url.startswith("data:image/png;base64,")
    settled(alice, 10_000_000 - 2 * DALL_E)


def test_an_image_model_through_chat_names_the_right_endpoint_and_costs_nothing(
    api, upstream, alice, image_channel
):
    before = len(upstream.received)
    with pytest.raises(openai.BadRequestError) as raised:
        api.chat.completions.create(
            model="dall-e-3", messages=[{"role": "user", "content": "Draw a cat"}]
        )
    error = raised.value.body
    assert error["code"] == "wrong_endpoint"
    assert "/v1/images/generations" in error["message"]
    assert "Nothing was charged" in error["message"]
    assert len(upstream.received) == before, "refused before it was forwarded"
    row = wait_until(lambda: RequestLog.objects.filter(error_code="wrong_endpoint").first())
    assert (row.status, row.cost) == (400, 0)
    assert balance_of(alice) == 10_000_000 == ledger_sum(alice)


def test_a_text_model_is_not_served_at_the_image_endpoint(api, upstream, alice, image_channel):
    with pytest.raises(openai.BadRequestError) as raised:
        api.images.generate(model="gpt-4o-mini", prompt="A cat")
    assert raised.value.body["code"] == "wrong_endpoint"
    assert "not an image model" in raised.value.body["message"]
    assert not any(r["path"] == "/v1/images/generations" for r in upstream.received)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"n": True}, "n"),
        ({"n": 1.0}, "n"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": 7}, "prompt"),
    ],
)
def test_a_bad_image_request_names_the_field(api, upstream, alice, image_channel, fields, param):
    request = {"model": "dall-e-3", "prompt": "A cat", **fields}
    with pytest.raises(openai.BadRequestError) as raised:
        api.post("/images/generations", body=request, cast_to=object)
    assert raised.value.body["param"] == param
    assert not upstream.received
    assert balance_of(alice) == 10_000_000


def test_a_failed_image_costs_nothing(api, upstream, alice, image_channel):
    upstream.behaviour["status"] = 500
    with pytest.raises(openai.InternalServerError) as raised:
        api.images.generate(model="dall-e-3", prompt="A cat")
    assert raised.value.status_code == 502
    row = wait_until(lambda: RequestLog.objects.filter(endpoint="image").first())
    assert (row.status, row.cost) == (502, 0)
    settled(alice, 10_000_000)
