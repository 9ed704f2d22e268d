"""The API's endpoints: each path and the handler that serves it.

A handler takes the gateway and the call, and returns the call's Outcome: the answer to send
and what its log row says. The gateway charges and records it, then sends it (relay.gateway).
A new protocol is a module of its own here, and a line in ROUTES; if its errors have a shape
of their own, a line in ERROR_SHAPES.

The OpenAI paths go to the channels as they are. The Responses API and Anthropic's Messages
API are bridged: each request becomes a chat completion, and its answer (whole or streamed) is
made into the client's protocol, so every channel serves every protocol and a model costs the
same through each.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.urls import Resolver404, resolve

from relay import errors
from relay.calls import Call, Outcome
from relay.handlers import anthropic, images, model_list, openai, responses

if TYPE_CHECKING:
    from relay.gateway import Gateway

Handler = Callable[["Gateway", Call], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str  # "": any
    endpoint: str  # the name the log gives it
    handler: Handler


ROUTES = {
    "/v1/chat/completions": Route("POST", "chat", openai.chat_completions),
    "/v1/completions": Route("POST", "completion", openai.completions),
    "/v1/embeddings": Route("POST", "embedding", openai.embeddings),
    "/v1/responses": Route("POST", "responses", responses.create),
    "/v1/messages": Route("POST", "messages", anthropic.messages),
    "/v1/messages/count_tokens": Route("POST", "count", anthropic.count_tokens),
    "/v1/images/generations": Route("POST", "image", images.generations),
    "/v1/models": Route("GET", "models", model_list.handle),
}

# /v1/responses/{id} (retrieve, delete, cancel, input items): the gateway keeps no answers.
STORED_RESPONSE = Route("", "responses", responses.stored)

# Error answers in a protocol's own shape, by path prefix (OpenAI's elsewhere), so that each
# protocol's SDK raises its own error classes.
ERROR_SHAPES: dict[str, Callable[[int, bytes], bytes]] = {
    errors.ANTHROPIC_PATHS: errors.anthropic_body,
}


def route(method: str, path: str) -> Route:
    """The route of a request; refuses a path or a method the API does not have, and an API
    call sent with a wrong base URL (/chat/completions, /v1/v1/…, /api/v1/…) says which base
    URL to use. A model's page, /v1/models/{model}, is the list's (a model's name may hold
    slashes)."""
    stripped = path.rstrip("/")
    found = _served(stripped)
    if found is None:
        meant = api_call(path)
        if meant is not None and _served("/v1" + meant[1]) is not None:
            anthropic = meant[1].startswith("/messages")
            raise errors.wrong_base_url(method, path, "/v1" + meant[1], anthropic=anthropic)
        raise errors.unknown_path(method, path)
    if found.method and method != found.method:
        raise errors.method_not_allowed(method, stripped)
    return found


def _served(path: str) -> Route | None:
    found = ROUTES.get(path)
    if found is None and path.startswith("/v1/models/"):
        found = ROUTES["/v1/models"]
    if found is None and path.startswith("/v1/responses/"):
        found = STORED_RESPONSE
    return found


# What API clients call after their base URL: OpenAI's and Anthropic's endpoints, served here
# or not. A path that ends in one of them is an API call, whatever comes before.
API_CALLS = frozenset(
    {
        "chat/completions",
        "completions",
        "embeddings",
        "responses",
        "messages",
        "messages/count_tokens",
        "models",
        "images/generations",
        "images/edits",
        "images/variations",
        "audio/speech",
        "audio/transcriptions",
        "audio/translations",
        "moderations",
        "rerank",
    }
)
# Followed by a name of their own: /models/{model} (which may hold slashes), /responses/{id}/….
API_CALLS_WITH_NAME = frozenset({"models", "responses"})
MOST_SEGMENTS = 12  # a longer path is no API call


def api_call(path: str) -> tuple[str, str] | None:
    """(prefix, call) when `path` ends in an API call: ("/v1/v1", "/chat/completions"),
    ("", "/models/gpt-4o"); None otherwise."""
    segments = path.strip("/").split("/")
    if len(segments) > MOST_SEGMENTS:
        return None
    for start in range(len(segments)):
        tail = "/".join(segments[start:])
        named = segments[start] in API_CALLS_WITH_NAME and ":" not in tail  # not Gemini's
        if tail in API_CALLS or named:
            return "/" + "/".join(segments[:start]) if start else "", "/" + tail
    return None


def misdirected(path: str) -> bool:
    """Whether a path outside /v1 is an API call sent with a wrong base URL, rather than a page
    of the console: the gateway answers it with an error its client can show (which base URL
    to use), where Django's page would leave the client with a bare 404. Nothing under a
    section of the console (/logs/…, /admin/…) is taken for one."""
    meant = api_call(path)
    if meant is None:
        return False
    section = "/" + path.lstrip("/").split("/", 1)[0] + "/"
    for console_path in (path, section):
        try:
            resolve(console_path)
        except Resolver404:
            continue
        return False
    return True


def error_body(path: str, status: int, body: bytes) -> bytes:
    """An error answer (ours, or a channel's passed on) in the shape of the path's protocol
    (for an API call sent with a wrong base URL, of the call it meant)."""
    if not path.startswith("/v1/") or path.startswith("/v1/v1/"):
        meant = api_call(path)
        if meant is not None:
            path = "/v1" + meant[1]
    for prefix, shape in ERROR_SHAPES.items():
        if path.startswith(prefix):
            return shape(status, body)
    return body
