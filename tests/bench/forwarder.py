"""A bare Python forwarder, the baseline the gateway is measured against: the least any Python
gateway does. A plain ASGI application that reads the POST body, sends it to the upstream with
the client the gateway uses (an aiohttp session, the same connector settings) and passes the
answer back; no authentication, parsing, money or records. Served by the same server as the
gateway, so that the difference is the gateway's own work.

FORWARD_TO=http://127.0.0.1:9100 python -m uvicorn tests.bench.forwarder:application …
granian --interface asgi tests.bench.forwarder:application …
"""

import os

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
    if session is None:  # a server run without lifespan
        session = _session()
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    try:
        async with session.post(
            UPSTREAM + scope["path"], data=b"".join(chunks), headers=headers
        ) as reply:
            body = await reply.read()
            status = reply.status
    except aiohttp.ClientError:  # counted by wrk as an error, as the gateway's would be
        body, status = b'{"error": "the upstream went away"}', 502
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _session():
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
        auto_decompress=True,
    )
