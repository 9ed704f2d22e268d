"""An OpenAI chat completion request as Gemini's generateContent request."""

import mimetypes
import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from relay.adapters.gemini.untrusted import count_of, list_of, object_of
from relay.metering import Payload, json_object

# thinkingBudget for OpenAI's reasoning_effort; other efforts leave the model's default.
THINKING_BUDGETS = {"low": 1024, "medium": 8192, "high": 24576}
TOOL_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
DATA_URL = re.compile(r"data:(?P<mime>[^;,]*)(?:;[^;,]*)*;base64,(?P<data>.*)", re.DOTALL)


class Refused(Exception):
    """A request this channel kind cannot carry; its text tells the client why."""


def request_of(payload: Payload) -> dict[str, Any]:
    """An OpenAI chat completion request as Gemini's generateContent request (without the
    model, which goes in the URL). Raises Refused for content Gemini cannot be sent."""
    system, contents = _contents(list_of(payload.get("messages")))
    native: dict[str, Any] = {"contents": contents}
    if system:
        native["systemInstruction"] = {"parts": system}
    declarations = [_declaration(tool) for tool in list_of(payload.get("tools"))]
    if any(declarations):
        native["tools"] = [{"functionDeclarations": [d for d in declarations if d]}]
    config = _tool_config(payload.get("tool_choice"))
    if config:
        native["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation_config(payload)
    if generation:
        native["generationConfig"] = generation
    return native


def _contents(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents): turns of one role in a row are merged, as Gemini
    wants user and model to take turns."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id → function name, for the results
    for message in messages:
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if role in {"system", "developer"}:
            system += [{"text": text} for text in _texts(content)]
            continue
        if role == "assistant":
            turn, parts = "model", [{"text": text} for text in _texts(content)]
            for call in list_of(message.get("tool_calls")):
                part = _function_call(call)
                if part:
                    names[str(call.get("id"))] = part["functionCall"]["name"]
                    parts.append(part)
        elif role in {"tool", "function"}:
            name = names.get(str(message.get("tool_call_id")), message.get("name"))
            turn, parts = "user", [_function_response(name, content)]
        else:
            turn, parts = "user", _parts(content)
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    return system, contents


def _texts(content: object) -> list[str]:
    """The text of a system or assistant message, part by part (refusals are text too)."""
    if isinstance(content, str):
        return [content] if content else []
    texts = []
    for part in list_of(content):
        text = object_of(part).get("text") or object_of(part).get("refusal")
        if isinstance(text, str) and text:
            texts.append(text)
    return texts


def _parts(content: object) -> list[dict[str, Any]]:
    """A user message's content as Gemini parts."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for item in list_of(content):
        part = object_of(item)
        kind = part.get("type")
        if kind == "text":
            if isinstance(part.get("text"), str) and part["text"]:
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            parts.append(_image(image.get("url") if isinstance(image, dict) else image))
        elif kind == "input_audio":
            audio = object_of(part.get("input_audio"))
            audio_format = str(audio.get("format") or "wav")
            data = audio.get("data")
            if not isinstance(data, str):
                raise Refused("An input_audio part needs its base64 'data'.")
            parts.append({"inlineData": {"mimeType": f"audio/{audio_format}", "data": data}})
        elif kind == "file":
            parts.append(_file(object_of(part.get("file"))))
        else:
            raise Refused(f"A Gemini channel cannot carry a content part of type {kind!r}.")
    return parts


def _image(url: object) -> dict[str, Any]:
    if not isinstance(url, str):
        raise Refused("An image_url part needs its 'url'.")
    inline = _data_url(url, "image/jpeg")
    if inline:
        return inline
    if urlsplit(url).scheme in {"http", "https"}:
        mime = mimetypes.guess_type(urlsplit(url).path)[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise Refused("A Gemini channel takes images as data: URLs or http(s) URLs.")


def _file(file: dict[str, Any]) -> dict[str, Any]:
    data = file.get("file_data")
    if not isinstance(data, str):
        raise Refused("A Gemini channel takes files as 'file_data', not as OpenAI file ids.")
    inline = _data_url(data, "application/pdf")
    if inline:
        return inline
    filename = file.get("filename")
    mime = mimetypes.guess_type(filename)[0] if isinstance(filename, str) else None
    return {"inlineData": {"mimeType": mime or "application/pdf", "data": data}}


def _data_url(url: str, default_mime: str) -> dict[str, Any] | None:
    match = DATA_URL.fullmatch(url)
    if not match:
        if url.startswith("data:"):
            raise Refused("A data: URL must be base64: data:<type>;base64,<data>.")
        return None
    return {"inlineData": {"mimeType": match["mime"] or default_mime, "data": match["data"]}}


def _function_call(call: object) -> dict[str, Any] | None:
    """An assistant's earlier tool call as a functionCall part, with its signature back."""
    function = object_of(object_of(call).get("function"))
    name = function.get("name")
    if not isinstance(name, str):
        return None
    arguments = function.get("arguments")
    args = arguments if isinstance(arguments, dict) else json_object(str(arguments or "{}"))
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args or {}}}
    google = object_of(object_of(object_of(call).get("extra_content")).get("google"))
    if isinstance(google.get("thought_signature"), str):
        part["thoughtSignature"] = google["thought_signature"]
    return part


def _function_response(name: object, content: object) -> dict[str, Any]:
    text = content if isinstance(content, str) else "".join(_texts(content))
    response = json_object(text) or {"content": text}
    return {
        "functionResponse": {"name": name if isinstance(name, str) else "", "response": response}
    }


def _declaration(tool: object) -> dict[str, Any] | None:
    """A function tool as a declaration; Gemini reads plain JSON Schema in parametersJsonSchema.
    Tools of other kinds (OpenAI's built-in ones) have no Gemini equivalent and are left out."""
    function = object_of(object_of(tool).get("function"))
    if object_of(tool).get("type", "function") != "function" or not isinstance(
        function.get("name"), str
    ):
        return None
    declaration: dict[str, Any] = {"name": function["name"]}
    if isinstance(function.get("description"), str):
        declaration["description"] = function["description"]
    if isinstance(function.get("parameters"), dict):
        declaration["parametersJsonSchema"] = function["parameters"]
    return declaration


def _tool_config(choice: object) -> dict[str, Any] | None:
    if isinstance(choice, str) and choice in TOOL_MODES:
        return {"mode": TOOL_MODES[choice]}
    name = object_of(object_of(choice).get("function")).get("name")
    if isinstance(name, str):
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    return None


def _generation_config(payload: Payload) -> dict[str, Any]:
    """The sampling settings Gemini shares with OpenAI; the others have no equivalent here."""
    # Always the limit the gateway held money for: Gemini's own default is many times more
    # (its thinking models think unasked), and maxOutputTokens bounds thinking and answer.
    config: dict[str, Any] = {"maxOutputTokens": int(settings.GATEWAY_DEFAULT_MAX_TOKENS)}
    for field in ("max_completion_tokens", "max_tokens"):
        if count_of(payload.get(field)):
            config["maxOutputTokens"] = payload[field]
            break
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
        value = payload.get(ours)
        if isinstance(value, int | float) and not isinstance(value, bool):
            config[theirs] = value
    stop = payload.get("stop")
    stops = [stop] if isinstance(stop, str) else [s for s in list_of(stop) if isinstance(s, str)]
    if stops:
        config["stopSequences"] = stops
    if count_of(payload.get("n")):
        config["candidateCount"] = payload["n"]
    seed = payload.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        config["seed"] = seed
    response_format = object_of(payload.get("response_format"))
    if response_format.get("type") in {"json_object", "json_schema"}:
        config["responseMimeType"] = "application/json"
        schema = object_of(response_format.get("json_schema")).get("schema")
        if response_format["type"] == "json_schema" and isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    effort = payload.get("reasoning_effort")
    if isinstance(effort, str) and effort in THINKING_BUDGETS:
        # Thinking takes at most half the limit, so that the answer has room too.
        config["thinkingConfig"] = {
            "thinkingBudget": min(THINKING_BUDGETS[effort], config["maxOutputTokens"] // 2)
        }
    return config
