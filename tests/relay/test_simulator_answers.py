"""The simulator's answers end at the end of a sentence when they finish ("stop"), and say
"length" when max_tokens cut them, in every vendor's dialect, whole and streamed."""

from decimal import Decimal

import openai
import pytest

from billing.models import ModelPrice
from relay.adapters.simulator import answer_words
from relay.models import Channel

MODELS = {"openai": "gpt-4.1", "anthropic": "claude-sonnet-4", "gemini": "gemini-2.0-flash"}
HI = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("count", range(1, 80))
def test_an_answer_has_its_length_and_ends_a_sentence(count):
    words = answer_words("gpt-4o", count)
    assert len(words) == count
    assert words[-1].endswith(".")


@pytest.fixture
def client(live_site, token_and_key, default_line):
    for dialect, model in MODELS.items():
        ModelPrice.objects.create(model=model, vendor=dialect, model_multiplier=Decimal(1))
        channel = Channel.objects.create(
            name=f"simulated {dialect}",
            type=Channel.Type.SIMULATOR,
            model_names=[model],
            simulator={"dialect": dialect, "completion_tokens": 20},
        )
        channel.lines.set([default_line])
    _token, key = token_and_key
    return openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)


def streamed(client, **request):
    chunks = list(client.chat.completions.create(messages=HI, stream=True, **request))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    return text, finish


@pytest.mark.parametrize("dialect", MODELS)
def test_a_finished_answer_ends_at_a_sentences_end(client, dialect):
    answer = client.chat.completions.create(model=MODELS[dialect], messages=HI)
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content.endswith(".")
    assert answer.usage.completion_tokens == 20
    text, finish = streamed(client, model=MODELS[dialect])
    assert (text, finish) == (answer.choices[0].message.content, ["stop"])


@pytest.mark.parametrize("dialect", MODELS)
def test_an_answer_cut_by_max_tokens_says_length(client, dialect):
    answer = client.chat.completions.create(model=MODELS[dialect], messages=HI, max_tokens=7)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 7
    assert answer.choices[0].message.content == "This is a simulated answer. It comes"
    text, finish = streamed(client, model=MODELS[dialect], max_tokens=7)
    assert (text, finish) == ("This is a simulated answer. It comes", ["length"])


def test_a_max_tokens_the_answer_fits_in_does_not_cut_it(client):
    answer = client.chat.completions.create(model="gpt-4.1", messages=HI, max_tokens=20)
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content.endswith(".")


def test_a_legacy_completion_says_why_it_ended(client):
    whole = client.completions.create(model="gpt-4.1", prompt="Hi")
    cut = client.completions.create(model="gpt-4.1", prompt="Hi", max_tokens=3)
    assert (whole.choices[0].finish_reason, whole.choices[0].text[-1]) == ("stop", ".")
    assert (cut.choices[0].finish_reason, cut.choices[0].text) == ("length", "This is a")
