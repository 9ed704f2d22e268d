"""A chat completion request as an Anthropic Messages request."""

import base64
import binascii
import json
import re
from typing import Any

from django.conf import settings

from relay.metering import Payload, json_object

# Anthropic's least thinking budget (and a budget must be below max_tokens).
LEAST_THINKING_BUDGET = 1024
# reasoning_effort as a thinking budget; "minimal" is Anthropic's least budget too.
THINKING_BUDGETS = {
    "minimal": LEAST_THINKING_BUDGET,
    "low": LEAST_THINKING_BUDGET,
    "medium": 4096,
    "high": 16384,
}
TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}
DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)


class Refused(Exception):
    """A request an Anthropic model cannot take as it is: answered 400 without sending it."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def messages_request(chat: Payload) -> Payload:
    """The Messages request for a chat completion request (relay.parsing checked its
    messages are {role, content} objects; the rest is read with care)."""
    n = chat.get("n")
    if isinstance(n, int) and n > 1:
        raise Refused("Anthropic models give one answer per request: send n=1.", "n")
    system, turns = _conversation(chat.get("messages") or [])
    request: Payload = {
        "model": chat["model"],
        "max_tokens": _max_tokens(chat),
        "messages": turns,
    }
    if system:
        request["system"] = system
    tools = [_tool(tool) for tool in _list(chat.get("tools"))]
    tools = [tool for tool in tools if tool]
    choice = _tool_choice(chat.get("tool_choice"), chat.get("parallel_tool_calls"))
    if tools:
        request["tools"] = tools
        if choice:
            request["tool_choice"] = choice
    temperature, top_p = _number(chat.get("temperature")), _number(chat.get("top_p"))
    if temperature is not None:
        request["temperature"] = min(max(temperature, 0.0), 1.0)
    if top_p is not None and temperature is None:
        # Anthropic's newer models refuse both at once; OpenAI clients often send both.
        request["top_p"] = top_p
    stops = chat.get("stop")
    stops = [stops] if isinstance(stops, str) else _list(stops)
    stops = [stop for stop in stops if isinstance(stop, str) and stop.strip()]
    if stops:
        request["stop_sequences"] = stops
    if isinstance(chat.get("user"), str) and chat["user"]:
        request["metadata"] = {"user_id": chat["user"][:256]}
    budget = _thinking_budget(chat.get("reasoning_effort"), request["max_tokens"])
    if budget and _thinking_allowed(chat, request.get("tool_choice")):
        request["thinking"] = {"type": "enabled", "budget_tokens": budget}
        # Thinking takes no sampling setting.
        request.pop("temperature", None)
        request.pop("top_p", None)
    if chat.get("stream") is True:
        request["stream"] = True
    return request


def _max_tokens(chat: Payload) -> int:
    for field in ("max_completion_tokens", "max_tokens"):
        value = chat.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    # Anthropic requires one; the gateway held money for the same default.
    return int(settings.GATEWAY_DEFAULT_MAX_TOKENS)


def _thinking_budget(effort: object, max_tokens: int) -> int | None:
    """The effort's budget, inside max_tokens as OpenAI's reasoning models count reasoning
    inside max_completion_tokens: the gateway held money for max_tokens, so it is never raised.
    None, no thinking, when what fits below max_tokens is less than Anthropic's least budget."""
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        return None
    budget = min(budget, max_tokens - 1)
    return budget if budget >= LEAST_THINKING_BUDGET else None


def _thinking_allowed(chat: Payload, tool_choice: object) -> bool:
    """Thinking refuses a forced tool, and a tool loop whose last assistant turn (whose
    thinking we cannot send back) called tools."""
    if isinstance(tool_choice, dict) and tool_choice.get("type") in ("any", "tool"):
        return False
    assistants = [m for m in _list(chat.get("messages")) if _role(m) == "assistant"]
    return not (assistants and _list(assistants[-1].get("tool_calls")))


def _conversation(messages: list[Any]) -> tuple[list[Payload], list[Payload]]:
    """(system blocks, turns): system and developer messages go to `system`; tool results go
    in a user turn; consecutive turns of one role are one, as Anthropic's roles alternate."""
    system: list[Payload] = []
    turns: list[Payload] = []
    for i, message in enumerate(messages):
        role = _role(message)
        if role in ("system", "developer"):
            system += [b for b in _blocks(message.get("content"), i) if b["type"] == "text"]
            continue
        if role == "user":
            blocks = _blocks(message.get("content"), i)
        elif role == "assistant":
            blocks = _assistant_blocks(message, i)
        elif role == "tool":
            blocks = [_tool_result(message)]
            role = "user"
        else:
            continue  # "function", the long-retired tool role, and roles no model knows
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        # A user turn holds its tool results first.
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return system, turns


def _role(message: object) -> str | None:
    role = message.get("role") if isinstance(message, dict) else None
    return role if isinstance(role, str) else None


def _blocks(content: object, at: int) -> list[Payload]:
    """A message's content as Anthropic's blocks; empty text, which it refuses, left out."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(_list(content)):
        block = _block(part, f"messages[{at}].content[{j}]")
        if block is None:
            continue
        blocks.append(_with_breakpoint(block, part))
    return blocks


def _with_breakpoint(block: Payload, part: object) -> Payload:
    """The block with the part's cache breakpoint (cache_control), where it has one."""
    mark = part.get("cache_control") if isinstance(part, dict) else None
    if isinstance(mark, dict) and mark.get("type") == "ephemeral":
        block["cache_control"] = {
            key: value for key, value in mark.items() if key in ("type", "ttl")
        }
    return block


def _block(part: Payload, where: str) -> Payload | None:
    kind = part.get("type")
    if kind in ("text", "refusal"):
        text = part.get(kind)
        return {"type": "text", "text": text} if isinstance(text, str) and text else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return _image(url, where)
    if kind == "file":
        return _document(part.get("file"), where)
    raise Refused(
        f"'{where}' is a part of type {json.dumps(str(kind))[:60]}, which an Anthropic model "
        "does not take: send text, image_url or file (PDF) parts.",
        "messages",
    )


def _image(url: object, where: str) -> Payload:
    if isinstance(url, str):
        found = DATA_URL.fullmatch(url)
        if found:
            source = {"type": "base64", "media_type": found[1], "data": found[2]}
            return {"type": "image", "source": source}
        if url.startswith(("https://", "http://")):
            return {"type": "image", "source": {"type": "url", "url": url}}
    raise Refused(
        f"'{where}.image_url.url' must be an https URL or a data:image/…;base64 URL.", "messages"
    )


def _document(file: object, where: str) -> Payload:
    """A PDF sent inline. A file kept at OpenAI (file_id) cannot reach Anthropic."""
    data = file.get("file_data") if isinstance(file, dict) else None
    if isinstance(data, str):
        found = DATA_URL.fullmatch(data)
        if found and found[1] == "application/pdf":
            data = found[2]
        elif found is None and _is_pdf(data):
            pass  # bare base64, as some clients send it
        else:
            data = None
    if not isinstance(data, str) or not isinstance(file, dict):
        raise Refused(
            f"'{where}' must be a PDF sent inline: "
            '{"type": "file", "file": {"filename": "…", '
            '"file_data": "data:application/pdf;base64,…"}}.',
            "messages",
        )
    block: Payload = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": data},
    }
    if isinstance(file.get("filename"), str) and file["filename"]:
        block["title"] = file["filename"]
    return block


def _is_pdf(data: str) -> bool:
    try:
        return base64.b64decode(data[:12], validate=True).startswith(b"%PDF")
    except (binascii.Error, ValueError):
        return False


def _assistant_blocks(message: Payload, at: int) -> list[Payload]:
    """Its text and tool calls; `reasoning_content` stays behind (it has no signature)."""
    blocks = _blocks(message.get("content"), at)
    for call in _list(message.get("tool_calls")):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        arguments = function.get("arguments")
        tool_input = json_object(arguments) if isinstance(arguments, str) else None
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or ""),
                "name": str(function.get("name") or ""),
                "input": tool_input or {},
            }
        )
    return blocks


def _tool_result(message: Payload) -> Payload:
    content = message.get("content")
    if isinstance(content, list):
        content = "\n".join(
            str(part.get("text"))
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    result: Payload = {"type": "tool_result", "tool_use_id": str(message.get("tool_call_id"))}
    if isinstance(content, str) and content:
        result["content"] = content
    # Agents mark their latest tool result as the end of the prefix to cache.
    parts = message.get("content")
    return _with_breakpoint(result, parts[-1] if isinstance(parts, list) and parts else None)


def _tool(tool: object) -> Payload | None:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        return None  # only functions: OpenAI's own tools have no place at Anthropic
    schema = function.get("parameters")
    native: Payload = {
        "name": function["name"],
        "input_schema": schema
        if isinstance(schema, dict)
        else {"type": "object", "properties": {}},
    }
    if isinstance(function.get("description"), str):
        native["description"] = function["description"]
    return native


def _tool_choice(choice: object, parallel: object) -> Payload | None:
    native: Payload | None = None
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        native = {"type": TOOL_CHOICES[choice]}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        native = {"type": "tool", "name": str(choice["function"].get("name"))}
    if parallel is False and (native is None or native["type"] != "none"):
        native = {**(native or {"type": "auto"}), "disable_parallel_tool_use": True}
    return native


def _number(value: object) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
