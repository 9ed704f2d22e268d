"""An answer's limit reaches each OpenAI-compatible server in the field it reads: the money held
for a request counts on that limit. DeepSeek and most other servers read max_tokens alone;
OpenAI's own reasoning models take max_completion_tokens alone."""

import pytest

from relay.adapters import for_channel
from relay.config import ChannelSnapshot

ASKED = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


def channel(kind, base_url):
    return ChannelSnapshot(1, "c", kind, base_url, "", {}, 0, 1, 1.0, 1.0, {})


@pytest.mark.parametrize(
    "base_url",
    ["https://api.deepseek.com", "http://127.0.0.1:8001/v1", "https://openrouter.ai/api/v1"],
)
def test_other_openai_compatible_servers_get_the_limit_as_max_tokens(base_url):
    sent = for_channel({**ASKED, "max_completion_tokens": 97}, channel("openai", base_url), False)
    assert sent["max_tokens"] == 97 and "max_completion_tokens" not in sent


@pytest.mark.parametrize(
    "base_url", ["https://api.openai.com/v1", "https://team.openai.azure.com/openai/v1"]
)
def test_openai_itself_gets_max_completion_tokens(base_url):
    sent = for_channel({**ASKED, "max_completion_tokens": 97}, channel("openai", base_url), False)
    assert sent["max_completion_tokens"] == 97 and "max_tokens" not in sent


def test_a_request_with_both_limits_is_sent_as_it_came():
    asked = {**ASKED, "max_tokens": 50, "max_completion_tokens": 97}
    assert for_channel(asked, channel("openai", "https://api.deepseek.com"), False) == asked


@pytest.mark.parametrize("kind", ["anthropic", "gemini", "simulator"])
def test_the_native_kinds_read_max_completion_tokens_themselves(kind):
    asked = {**ASKED, "max_completion_tokens": 97}
    assert for_channel(asked, channel(kind, "https://example.com"), False) == asked
