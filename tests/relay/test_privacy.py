"""Request and response content is never stored or logged, anywhere."""

import contextlib
import io
import logging
import uuid

import openai
from django.core.management import call_command

from logs.models import RequestLog
from tests.relay.conftest import wait_until


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
