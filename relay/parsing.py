"""Request bodies: JSON, and the fields the gateway reads checked one by one, so that a
mistake is answered in the OpenAI shape, naming the field, before any money is held.

Fields the gateway does not read pass to the channel as they are.
"""

import json
from typing import Any

from relay import errors
from relay.metering import Payload

MAX_ANSWERS = 128  # n and best_of, as OpenAI bounds them


def chat_completions(body: bytes) -> Payload:
    payload = _json_object(body)
    _model(payload)
    messages = _required(payload, "messages", "chat/completions")
    if not isinstance(messages, list):
        raise errors.bad_field("messages", "'messages' must be a list of {role, content} objects.")
    _options(payload)
    if not all(_is_message(message) for message in messages):
        raise errors.bad_field(
            "messages",
            "Each of 'messages' must be an object with a 'role' string and a 'content' "
            "string, list of parts or null.",
        )
    return payload


def image_generations(body: bytes) -> Payload:
    payload = _json_object(body)
    _model(payload)
    prompt = _required(payload, "prompt", "images/generations")
    if not isinstance(prompt, str):
        raise errors.bad_field("prompt", "'prompt' must be a string describing the image.")
    # An image model is priced per call: one image a request, so that a request costs what
    # the price list says.
    n = payload.get("n")
    if n is not None and (type(n) is not int or n != 1):
        raise errors.bad_field(
            "n",
            "'n' must be 1: an image is priced per request. Send one request for each image.",
        )
    if payload.get("stream") is not None and payload.get("stream") is not False:
        raise errors.bad_field("stream", "Images are not streamed: leave 'stream' out.")
    return payload


def completions(body: bytes) -> Payload:
    return _text_request(body, "prompt", "completions")


def embeddings(body: bytes) -> Payload:
    return _text_request(body, "input", "embeddings")


def bridged(body: bytes) -> Payload:
    """A request in a bridged protocol (relay.bridges): a JSON object naming a model; its
    bridge checks the rest as it converts it."""
    payload = _json_object(body)
    _model(payload)
    return payload


def _text_request(body: bytes, field: str, endpoint: str) -> Payload:
    payload = _json_object(body)
    _model(payload)
    value = _required(payload, field, endpoint)
    _options(payload)
    if not _is_text_or_tokens(value):
        raise errors.bad_field(
            field,
            f"'{field}' must be a string, a list of strings, a list of token ids or a list "
            "of lists of token ids.",
        )
    return payload


class _NotJSON(ValueError):
    pass


def _no_constants(name: str) -> None:
    raise _NotJSON(f"{name} is not a JSON value")


# json.loads with an option of its own makes a decoder each time: this one is made once.
_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def _json_object(body: bytes) -> Payload:
    if not body.strip():
        raise errors.bad_json("the body is empty")
    try:
        payload = _DECODER.decode(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise errors.bad_json("it is not UTF-8") from None
    except RecursionError:
        raise errors.bad_json("it is nested too deeply") from None
    except _NotJSON as error:
        raise errors.bad_json(str(error)) from None
    except ValueError as error:
        raise errors.bad_json(
            f"line {getattr(error, 'lineno', '?')}, column {getattr(error, 'colno', '?')}"
        ) from None
    if not isinstance(payload, dict):
        raise errors.bad_json("it must be an object, {…}")
    return payload


def _model(payload: Payload) -> None:
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise errors.bad_field(
            "model",
            "'model' is required: the name of a model, such as "
            '"gpt-4o-mini". GET /v1/models lists them.',
        )


def _required(payload: Payload, field: str, endpoint: str) -> Any:
    value = payload.get(field)
    if value is None or value == "" or value == []:
        raise errors.bad_field(field, f"'{field}' is required for {endpoint}.")
    return value


def _options(payload: Payload) -> None:
    """The options the gateway reads: streaming, and those that bound what is held."""
    # null means the default (no stream), as for OpenAI.
    if payload.get("stream") is not None and not isinstance(payload["stream"], bool):
        raise errors.bad_field("stream", "'stream' must be true or false.")
    # Read on streams (whether the client wants the usage chunk), and amended for channels.
    options = payload.get("stream_options")
    if options is not None and (
        not isinstance(options, dict)
        or not isinstance(options.get("include_usage", False), bool | None)
    ):
        raise errors.bad_field(
            "stream_options",
            "'stream_options' must be an object such as {\"include_usage\": true}, or null.",
        )
    for field in ("max_tokens", "max_completion_tokens"):
        if not _whole(payload.get(field), 1, None):
            raise errors.bad_field(field, f"'{field}' must be a positive whole number.")
    # Each answer asked for is held and billed: only whole numbers, within OpenAI's bound.
    for field in ("n", "best_of"):
        if not _whole(payload.get(field), 1, MAX_ANSWERS):
            raise errors.bad_field(
                field, f"'{field}' must be a whole number from 1 to {MAX_ANSWERS}."
            )


def _whole(value: object, least: int, most: int | None) -> bool:
    """Absent (None), or a whole number (not a bool) from `least` to `most`."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return least <= value and (most is None or value <= most)


def _is_message(message: object) -> bool:
    """{role, content}: content a string, a list of parts ({type, …}), or null."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        return False
    content = message.get("content")
    if content is None or isinstance(content, str):
        return True
    return isinstance(content, list) and all(isinstance(part, dict) for part in content)


def _tokens(items: list[Any]) -> bool:
    return all(isinstance(t, int) and not isinstance(t, bool) for t in items)


def _is_text_or_tokens(value: object) -> bool:
    """A prompt or an input: a string, or a list of strings, of token ids or of token lists."""
    if isinstance(value, str):
        return True
    if not isinstance(value, list):
        return False
    return (
        all(isinstance(item, str) for item in value)
        or _tokens(value)
        or all(isinstance(item, list) and _tokens(item) for item in value)
    )
