"""What the gateway itself does of HTTP: the request body within its limit, and the answer.

Everything else is the server's (uvicorn): framing, keep-alive, and the client's address from
trusted proxies' X-Forwarded-For (`--proxy-headers --forwarded-allow-ips`, see the Procfile),
which arrives here as the ASGI scope's "client".
"""

import functools
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from uuid import UUID

from django.conf import settings

from relay import errors

# ASGI's types, as the server hands them over: dicts whose values depend on their "type".
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

JSON = b"application/json"
NO_RETRY: Headers = ((b"x-should-retry", b"false"),)
RETRY: Headers = ((b"x-should-retry", b"true"),)


@functools.lru_cache(maxsize=4096)
def _address(host: str) -> str | None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host


def client_ip(scope: Scope) -> str | None:
    """The client's address, as the server found it; None where it is not one (a Unix socket,
    or a proxy's X-Forwarded-For entry that is no address): a log row holds addresses only."""
    client = scope.get("client")
    return _address(client[0]) if client else None


def header(scope: Scope, name: bytes) -> str | None:
    """A request header's value; `name` in lower case, as servers give them."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(scope: Scope, receive: Receive) -> bytes:
    """The whole request body, refused past GATEWAY_MAX_BODY_BYTES as soon as that shows."""
    limit = settings.GATEWAY_MAX_BODY_BYTES
    declared = header(scope, b"content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise errors.body_too_large(limit)
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise errors.GatewayError(400, "client_disconnected", "The client went away.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise errors.body_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def wait_disconnect(receive: Receive) -> None:
    """Returns when the client goes away (read while an answer streams)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def respond(
    send: Send, status: int, body: bytes, request_id: UUID, extra_headers: Headers = ()
) -> None:
    """A whole JSON answer."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", JSON),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", str(request_id).encode()),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def start_stream(send: Send, request_id: UUID) -> None:
    """The head of a server-sent event stream; its events follow with `more_body`."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-request-id", str(request_id).encode()),
            ],
        }
    )
