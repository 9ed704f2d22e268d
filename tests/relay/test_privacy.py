"""Request and response content is never stored or logged, anywhere."""

import base64
import contextlib
import io
import json
import logging
import uuid

import anthropic
import openai
import pytest
import redis
from django.conf import settings
from django.core.management import call_command

from accounts.models import NotificationSettings
from billing import services
from billing.models import LedgerEntry, ModelPrice
from logs.models import RequestLog
from tests.relay.conftest import make_channel, wait_until
from tests.relay.processes import GatewayProcess
from tokens.services import token_create


def test_a_canary_in_a_prompt_and_an_answer_appears_nowhere(api, upstream, caplog, alice):
    caplog.set_level(logging.DEBUG)
    canary = f"canary-{uuid.uuid4().hex}"
    upstream.behaviour["echo"] = True
    reply = api.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"Remember {canary}"}]
    )
    assert canary in reply.choices[0].message.content  # it did travel through the gateway
    list(
        api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": canary}], stream=True
        )
    )
    api.embeddings.create(model="text-embedding-3-small", input=canary)
    upstream.behaviour["status"] = 400
    with contextlib.suppress(openai.BadRequestError):  # the error path too
        api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": canary}]
        )
    wait_until(lambda: RequestLog.objects.count() == 4)
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    assert canary not in dump.getvalue()
    assert canary not in caplog.text


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_canary_reaches_no_store_of_a_gateway_in_production_shape(
    tmp_path, upstream, prices, default_line, alice
):
    """A gateway process of its own with DEBUG off, Redis and a real Celery queue (no worker:
    its messages stay in Redis to be read), logging at DEBUG: the canary travels in prompts,
    answers, streams, embeddings and upstream errors, through every protocol (chat, Anthropic
    Messages and token counts, the Responses API, images), and is found in none of the database,
    Redis (every key and value, Celery's messages decoded), the process's output, its journal
    or MEDIA_ROOT."""
    make_channel(upstream)
    ModelPrice.objects.create(
        model="dall-e-3", vendor="OpenAI", kind="image", pricing="per_call", call_price=40_000
    )
    make_channel(upstream, "images", models=["dall-e-3"])
    upstream.behaviour["echo"] = True
    services.balance_credit(user=alice, amount=2_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    # A low-balance alert to be queued by the settlement: a Celery message to look into.
    NotificationSettings.objects.update_or_create(
        user=alice, defaults={"low_balance_emails": True, "low_balance_threshold": 5_000_000}
    )
    _token, key = token_create(user=alice, name="canary", line=default_line, notify=False)
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    media = tmp_path / "media"
    gateway = GatewayProcess(
        tmp_path,
        CELERY_TASK_ALWAYS_EAGER="0",
        LOG_LEVEL="DEBUG",
        DJANGO_LOG_LEVEL="DEBUG",
        MEDIA_ROOT=media,
    ).start()
    try:
        api = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
        canary = send_canaries(api, upstream)
        wait_until(lambda: RequestLog.objects.count() == 10, message="the requests logged")
        journal = b"".join(p.read_bytes() for p in settings.GATEWAY_JOURNAL_DIR.glob("*"))
        assert journal.count(b"\n") >= 10 + 1, "the journal holds the requests"
    finally:
        gateway.stop()
    messages = celery_messages()
    assert messages, "the low-balance alert is queued in Redis"
    stores = {
        "the database": dumped(),
        "Redis": redis_contents(),
        "Celery messages": b"".join(messages),
        "the process output": gateway.output.read_bytes(),
        "the journal": journal,
        "MEDIA_ROOT": b"".join(p.read_bytes() for p in media.rglob("*") if p.is_file()),
    }
    for where, content in stores.items():
        assert canary.encode() not in content, f"the canary is in {where}"


def send_canaries(api, upstream):
    """The canary through each protocol, whole and streamed, answered and refused upstream:
    10 requests."""
    canary = f"canary-{uuid.uuid4().hex}"
    reply = api.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"Remember {canary}"}]
    )
    assert canary in reply.choices[0].message.content  # it did travel through the gateway
    streamed_text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": canary}], stream=True
        )
        if chunk.choices
    )
    assert canary in streamed_text
    api.embeddings.create(model="text-embedding-3-small", input=canary)
    claude = anthropic.Anthropic(
        base_url=str(api.base_url).removesuffix("/").removesuffix("/v1"),
        api_key=api.api_key,
        max_retries=0,
    )
    message = claude.messages.create(
        model="gpt-4o-mini",
        max_tokens=64,
        system=f"Keep {canary}",
        messages=[{"role": "user", "content": canary}],
    )
    assert canary in message.content[0].text
    with claude.messages.stream(
        model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": canary}]
    ) as stream:
        assert canary in stream.get_final_text()
    claude.messages.count_tokens(
        model="gpt-4o-mini", messages=[{"role": "user", "content": canary}]
    )
    answer = api.responses.create(model="gpt-4o-mini", instructions=canary, input=canary)
    assert canary in answer.output_text
    events = list(api.responses.create(model="gpt-4o-mini", input=canary, stream=True))
    assert canary in events[-1].response.output_text
    api.images.generate(model="dall-e-3", prompt=canary)
    upstream.behaviour["status"] = 400
    with pytest.raises(openai.BadRequestError) as refused:
        api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": canary}]
        )
    assert canary in str(refused.value)  # the upstream's error reached the client as it was
    return canary


def dumped():
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    return dump.getvalue().encode()


def redis_contents():
    client = redis.Redis.from_url(settings.REDIS_URL)
    found = []
    for key in client.scan_iter(count=1000):
        found.append(key)
        kind = client.type(key)
        if kind == b"string":
            found.append(client.get(key) or b"")
        elif kind == b"list":
            found += client.lrange(key, 0, -1)
        elif kind == b"hash":
            found += [b"%s=%s" % item for item in client.hgetall(key).items()]
        elif kind in (b"set", b"zset"):
            found += client.zrange(key, 0, -1) if kind == b"zset" else client.smembers(key)
        elif kind == b"stream":
            found += [repr(entry).encode() for entry in client.xrange(key)]
    return b"\n".join(found)


def celery_messages():
    """Every message waiting in the broker's queues, with its body decoded."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    messages = []
    for queue in client.scan_iter():
        if client.type(queue) != b"list":
            continue
        for raw in client.lrange(queue, 0, -1):
            message = json.loads(raw)
            body = message.get("body", "")
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            messages.append(body if isinstance(body, bytes) else body.encode())
    return messages
