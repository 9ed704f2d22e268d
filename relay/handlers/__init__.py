"""The API's endpoints: each path and the handler that serves it.

A handler takes the gateway and the call, and returns the call's Outcome: the answer to send
and what its log row says. The gateway charges and records it, then sends it (relay.gateway).
A new protocol is a module of its own here, and a line in ROUTES.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay import errors
from relay.calls import Call, Outcome
from relay.handlers import model_list, openai

if TYPE_CHECKING:
    from relay.gateway import Gateway

Handler = Callable[["Gateway", Call], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    endpoint: str  # the name the log gives it
    handler: Handler


ROUTES = {
    "/v1/chat/completions": Route("POST", "chat", openai.chat_completions),
    "/v1/completions": Route("POST", "completion", openai.completions),
    "/v1/embeddings": Route("POST", "embedding", openai.embeddings),
    "/v1/models": Route("GET", "models", model_list.handle),
}


def route(method: str, path: str) -> Route:
    """The route of a request; refuses a path or a method the API does not have. A model's
    page, /v1/models/{model}, is the list's (a model's name may hold slashes)."""
    stripped = path.rstrip("/")
    found = ROUTES.get(stripped)
    if found is None and stripped.startswith("/v1/models/"):
        found = ROUTES["/v1/models"]
    if found is None:
        raise errors.unknown_path(method, path)
    if method != found.method:
        raise errors.method_not_allowed(method, stripped)
    return found
