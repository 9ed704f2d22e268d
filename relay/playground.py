"""The console's playground, served by the gateway: a signed-in user chats through one of their
own tokens, and the chat goes through the gateway's own handling of /v1/chat/completions, so
that it is authorised, held, billed and logged exactly as an API request with that token is
(its limits, allowed models, line and IP allowlist; the gateway's errors, word for word).

The console knows a token's hash, not its key: once the session, the CSRF token and the
token's owner are checked, the gateway is handed the token's hash in the call's scope
(relay.auth.KEY_HASH) instead of a key. It is a Django application of its own, for
console.asgi to send CHAT_PATH to, so that the session, CSRF and security middleware run as on
every console page; its answer streams back as the gateway writes it. What is asked and
answered passes through memory only: nothing of it is stored or logged.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from console.views.playground import CHAT_PATH, ChatForm, chat_request
from relay import auth, errors, http
from tokens.models import Token

if TYPE_CHECKING:
    from relay.gateway import Gateway

# The answer's headers that reach the page.
PASSED_HEADERS = {b"content-type", b"cache-control", b"x-request-id", b"x-request-cost"}


class PlaygroundRequest(ASGIRequest):
    gateway: "Gateway"


class Playground(ASGIHandler):
    """Django, with this module's URLs, for the playground's path alone (console.asgi)."""

    request_class = PlaygroundRequest

    def __init__(self, gateway: "Gateway") -> None:
        super().__init__()
        self.gateway = gateway

    def create_request(self, scope: Mapping[str, Any], body_file: Any) -> tuple[Any, Any]:
        request, error = super().create_request(scope, body_file)
        if isinstance(request, PlaygroundRequest):
            request.urlconf = __name__
            request.gateway = self.gateway
        return request, error


def refusal(error: errors.GatewayError) -> HttpResponse:
    return HttpResponse(error.body(), status=error.status, content_type="application/json")


@never_cache
@require_POST
async def chat(request: HttpRequest) -> HttpResponseBase:
    user = await request.auser()
    if not user.is_authenticated:
        return refusal(
            errors.GatewayError(401, "not_signed_in", "You are signed out: sign in again.")
        )
    form = ChatForm(_json(request.body))
    if not form.is_valid():
        message = " ".join(str(e) for field in form.errors.values() for e in field)
        return refusal(errors.bad_field(next(iter(form.errors)), message))
    # Another user's token is no token at all, as everywhere in the console.
    token = await Token.objects.of_owner(user).filter(pk=form.cleaned_data["token"]).afirst()
    if token is None:
        return refusal(errors.GatewayError(404, "token_not_found", "No such token."))
    body = _dumps(chat_request(form))
    return await _through_gateway(cast(PlaygroundRequest, request), token.key_hash, body)


async def _through_gateway(
    request: PlaygroundRequest, key_hash: str, body: bytes
) -> HttpResponseBase:
    """The gateway's answer to a chat completion request with `body`, from the token whose key
    hash this is: whole, or streamed as it comes."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"content-type", http.JSON), (b"content-length", b"%d" % len(body))],
        "client": request.scope.get("client"),
        auth.KEY_HASH: key_hash,
    }
    sent: asyncio.Queue[http.Message] = asyncio.Queue()
    gone = asyncio.Event()  # the page went away: the gateway ends the stream, billed so far
    requested = False

    async def receive() -> http.Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    call = asyncio.ensure_future(request.gateway(scope, receive, sent.put))
    _running.add(call)
    call.add_done_callback(_running.discard)
    start = await _first(sent, call)
    headers = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in start["headers"]
        if name.lower() in PASSED_HEADERS
    }
    if headers.get("content-type", "").startswith("text/event-stream"):
        response: HttpResponseBase = StreamingHttpResponse(
            _streamed(sent, gone), status=start["status"]
        )
    else:
        response = HttpResponse(b"".join([p async for p in _streamed(sent, gone)]))
        response.status_code = start["status"]
    for name, value in headers.items():
        response[name] = value
    return response


async def _first(sent: asyncio.Queue[http.Message], call: asyncio.Future[None]) -> http.Message:
    """The answer's first message, once the gateway sends it."""
    first = asyncio.ensure_future(sent.get())
    either: set[asyncio.Future[Any]] = {first, call}
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not first.done():  # the gateway answers every call: this is a bug of ours
        first.cancel()
        raise RuntimeError("The gateway ended a playground call without an answer.")
    return first.result()


# Calls under way: the event loop keeps only weak references to tasks.
_running: set[asyncio.Future[None]] = set()


async def _streamed(sent: asyncio.Queue[http.Message], gone: asyncio.Event) -> AsyncIterator[bytes]:
    """The answer's body as the gateway sends it; when the page goes away, the gateway is told."""
    try:
        while True:
            message = await sent.get()
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body"):
                return
    finally:
        gone.set()


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


urlpatterns = [path(CHAT_PATH.lstrip("/"), chat, name="playground_chat")]
