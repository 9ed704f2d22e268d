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
    """The route of a request; refuses a path or a method the API does not have. A model's
    page, /v1/models/{model}, is the list's (a model's name may hold slashes)."""
    stripped = path.rstrip("/")
    found = ROUTES.get(stripped)
    if found is None and stripped.startswith("/v1/models/"):
        found = ROUTES["/v1/models"]
    if found is None and stripped.startswith("/v1/responses/"):
        found = STORED_RESPONSE
    if found is None:
        raise errors.unknown_path(method, path)
    if found.method and method != found.method:
        raise errors.method_not_allowed(method, stripped)
    return found


def error_body(path: str, status: int, body: bytes) -> bytes:
    """An error answer (ours, or a channel's passed on) in the shape of the path's protocol."""
    for prefix, shape in ERROR_SHAPES.items():
        if path.startswith(prefix):
            return shape(status, body)
    return body
