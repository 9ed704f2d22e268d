"""OpenAI's Responses API (POST /v1/responses), bridged to chat completions.

`chat_request` (request.py) makes a Responses request into a chat completion request, refusing
what cannot be bridged with what to send instead; `response` (answer.py) makes a chat answer
into a Response object, and `ResponseStream` a chat stream's chunks into the Responses events,
one chunk at a time.

The gateway keeps no request or response content, so nothing that needs an earlier response
(`previous_response_id`, `conversation`, an `item_reference`, retrieving one) can work: the
client sends the whole conversation as `input` items each time, as Codex does with store false.
"""

from relay.bridges.responses.answer import BROKEN_OFF, ResponseStream, response
from relay.bridges.responses.request import chat_request, no_stored_responses

__all__ = ["BROKEN_OFF", "ResponseStream", "chat_request", "no_stored_responses", "response"]
