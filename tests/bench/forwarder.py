"""A bare Python forwarder, the baseline the gateway is measured against: the least any Python
gateway does. A plain ASGI application that reads the POST body, sends it to the upstream with
the client the gateway uses (an aiohttp session, the same connector settings) and passes the
answer back; no authentication, parsing, money or records. Served by the same server as the
gateway, so that the difference is the gateway's own work.

`least_billing` is the least a gateway that bills per request must add to that: it finds the
caller by a hash of the key, reads the model from the request and the usage from the answer,
prices it, and keeps a record in memory; no database, held money, journal or metrics. Between
the two lies what any Python gateway pays before its own design matters.

FORWARD_TO=http://127.0.0.1:9100 python -m uvicorn tests.bench.forwarder:application …
granian --interface asgi tests.bench.forwarder:application …
"""

import hashlib
import json
import os
import uuid

import aiohttp

UPSTREAM = os.environ.get("FORWARD_TO", "http://127.0.0.1:9100")
session = None


async def application(scope, receive, send):
    global session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                session = _session()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    status, body = await _forwarded(scope["path"], await _body(receive))
    await _respond(send, status, body)


# least_billing's: the callers by the hash of their key, and the records of the last requests.
callers: dict[bytes, int] = {}
records: list[tuple] = []
KEPT = 10_000


async def least_billing(scope, receive, send):
    if scope["type"] != "http":
        await application(scope, receive, send)  # the lifespan, as above
        return
    key = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
    caller = callers.setdefault(hashlib.sha256(key).digest(), len(callers) + 1)
    request = await _body(receive)
    model = json.loads(request)["model"]
    status, body = await _forwarded(scope["path"], request)
    usage = (json.loads(body).get("usage") or {}) if status == 200 else {}
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    cost, request_id = prompt * 75 + completion * 300, uuid.uuid4()  # a fixed price per token
    records.append((request_id, caller, model, prompt, completion, cost))
    if len(records) > KEPT:
        records.clear()
    extra = [(b"x-request-id", str(request_id).encode()), (b"x-request-cost", b"%d" % cost)]
    await _respond(send, status, body, extra)


async def _body(receive):
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _forwarded(path, request):
    global session
    if session is None:  # a server run without lifespan
        session = _session()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    try:
        async with session.post(UPSTREAM + path, data=request, headers=headers) as reply:
            return reply.status, await reply.read()
    except aiohttp.ClientError:  # counted by wrk as an error, as the gateway's would be
        return 502, b'{"error": "the upstream went away"}'


async def _respond(send, status, body, extra=()):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _session():
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
        auto_decompress=True,
    )
