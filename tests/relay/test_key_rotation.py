"""API keys survive a rotation of the key they are hashed with: one hashed under a previous
key (TOKEN_HASH_KEY_FALLBACKS) still works through the gateway and is rehashed on its first use,
so the old key can then go."""

import openai
import pytest

from tokens import keys
from tokens.cache import load_snapshot
from tokens.models import Token
from tokens.services import token_create


def test_an_api_key_hashed_under_the_previous_hash_key_works_and_is_rehashed(
    settings, live_site, funded, default_line, channel
):
    settings.TOKEN_HASH_KEY = "previous-token-hash-key"
    token, key = token_create(user=funded, name="rotated", line=default_line, notify=False)
    _, unused_key = token_create(user=funded, name="idle", line=default_line, notify=False)
    settings.TOKEN_HASH_KEY = "current-token-hash-key"
    client = openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)

    settings.TOKEN_HASH_KEY_FALLBACKS = ["previous-token-hash-key"]
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices
    assert Token.objects.get(pk=token.pk).key_hash == keys.hash_key(key)

    # Once the old key is dropped, a worker that never saw the rehashed API key finds it by the
    # new hash alone; the key not used during the rotation no longer works.
    settings.TOKEN_HASH_KEY_FALLBACKS = []
    assert load_snapshot(keys.hash_key(key)).id == token.pk
    idle = openai.OpenAI(base_url=f"{live_site.url}/v1", api_key=unused_key, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        idle.models.list()
