"""GET /v1/models and GET /v1/models/{model}: the models the token can call, as OpenAI lists
them."""

import json
from typing import TYPE_CHECKING

from relay import errors
from relay.calls import Call, Outcome

if TYPE_CHECKING:
    from relay.gateway import Gateway


async def handle(gateway: "Gateway", call: Call) -> Outcome:
    token, config = await gateway.admit(call)
    names = config.models_on_line(token.line_id)
    if token.allowed_models:
        names = [name for name in names if name in token.allowed_models]
    entries = [
        {
            "id": name,
            "object": "model",
            "created": config.prices[name].created,
            "owned_by": config.prices[name].vendor,
        }
        for name in names
    ]
    path = call.scope["path"].rstrip("/")
    if not path.startswith("/v1/models/"):
        return Outcome(200, json.dumps({"object": "list", "data": entries}).encode())
    wanted = path.removeprefix("/v1/models/")
    found = next((entry for entry in entries if entry["id"] == wanted), None)
    if found is None:
        raise errors.unknown_model(wanted)
    return Outcome(200, json.dumps(found).encode())
