"""Anthropic's Messages API over chat completions: a Messages request made into a chat
completion request, and the chat answer made into a Message, whole or as Anthropic's stream of
events (https://docs.anthropic.com/en/api/messages, .../messages-streaming).

What chat completions cannot carry is left out on the way in: thinking blocks (a channel cannot
take them back), top_k, metadata, the `thinking` setting, and Anthropic's server tools (web
search and the like, which run at Anthropic). A mistake in what we read is refused, naming the
field and saying what to send.

cache_control on the system prompt, text and tool results is kept on the chat message's parts,
where an Anthropic channel reads it back (prompt caching is most of an agent's bill); the
request is marked (CACHE_MARKS) so that it is taken off for the channels that refuse it.
"""

import json
from typing import Any

from relay import errors
from relay.metering import Payload, Usage, json_object

# How a chat answer ended, as Anthropic says it.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Blocks of an assistant's turn that a chat channel cannot take back: left out.
DROPPED_BLOCKS = {"thinking", "redacted_thinking"}
# A chat request's mark that the bridge put cache_control on its parts (see relay.adapters).
CACHE_MARKS = "_cache_marks"
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


# The request


def chat_request(request: Payload, *, counting: bool = False) -> Payload:
    """The chat completion request for a Messages request (parsing.bridged checked its JSON and
    model). `counting`: for count_tokens, which has no max_tokens."""
    chat: Payload = {"model": request["model"]}
    if not counting:
        chat["max_tokens"] = _max_tokens(request.get("max_tokens"))
    system = _system(request.get("system"))
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise errors.bad_field(
            "messages",
            "'messages' is required: a list of turns such as "
            '[{"role": "user", "content": "Hello"}].',
        )
    turns = [
        turn for i, message in enumerate(messages) for turn in _turn(message, f"messages[{i}]")
    ]
    if not turns:  # thinking alone, which no chat channel takes back
        raise errors.bad_field(
            "messages",
            "'messages' holds nothing for the model to answer: add a user turn with text.",
        )
    chat["messages"] = system + turns
    if request.get("stream") is not None and not isinstance(request["stream"], bool):
        raise errors.bad_field("stream", "'stream' must be true or false.")
    if request.get("stream"):
        chat["stream"] = True
    for field in ("temperature", "top_p"):
        if request.get(field) is not None:
            chat[field] = _number(request[field], field)
    stops = request.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        raise errors.bad_field(
            "stop_sequences", "'stop_sequences' must be a list of strings, such as [\"END\"]."
        )
    if stops:
        chat["stop"] = stops
    chat.update(_tools(request.get("tools"), request.get("tool_choice")))
    if any(_marked(message) for message in chat["messages"]):
        chat[CACHE_MARKS] = True
    return chat


def _marked(message: Payload) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any("cache_control" in part for part in content)


def _cached(part: Payload, block: Payload) -> Payload:
    """A chat part with the block's cache breakpoint, if it has one."""
    mark = block.get("cache_control")
    return {**part, "cache_control": mark} if isinstance(mark, dict) else part


def _max_tokens(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise errors.bad_field(
            "max_tokens",
            "'max_tokens' is required: the most tokens the answer may have, a positive whole "
            "number such as 1024.",
        )
    return value


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.bad_field(field, f"'{field}' must be a number, such as 0.7.")
    return value


def _system(system: object) -> list[Payload]:
    """The system prompt, a string or a list of text blocks, as one system message."""
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if isinstance(system, list) and all(_is_text_block(block) for block in system):
        if any("cache_control" in block for block in system):
            parts = [_cached({"type": "text", "text": block["text"]}, block) for block in system]
            return [{"role": "system", "content": parts}]
        text = "\n\n".join(block["text"] for block in system)
        return [{"role": "system", "content": text}] if text else []
    raise errors.bad_field(
        "system",
        "'system' must be a string, or a list of text blocks such as "
        '[{"type": "text", "text": "You are a helpful assistant."}].',
    )


def _is_text_block(block: object) -> bool:
    return (
        isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )


def _turn(message: object, where: str) -> list[Payload]:
    """One turn of the conversation as chat messages: a user's tool results become tool
    messages (first, since a chat channel wants them right after the assistant's tool calls)."""
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise errors.bad_field(
            "messages",
            f"'{where}' must be an object with a 'role' of \"user\" or \"assistant\" and a "
            "'content'; instructions go in the top-level 'system' field.",
        )
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": message["role"], "content": content}]
    if not isinstance(content, list) or not content:
        raise errors.bad_field(
            "messages",
            f"'{where}.content' must be a string, or a list of content blocks such as "
            '[{"type": "text", "text": "Hello"}].',
        )
    blocks = [_block(block, f"{where}.content[{i}]") for i, block in enumerate(content)]
    if message["role"] == "assistant":
        return _assistant(blocks, where)
    return _user(blocks, where)


def _block(block: object, where: str) -> Payload:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise errors.bad_field(
            "messages", f"'{where}' must be a content block: an object with a 'type'."
        )
    return block


def _assistant(blocks: list[Payload], where: str) -> list[Payload]:
    texts: list[str] = []
    calls: list[Payload] = []
    for i, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            texts.append(_text(block, f"{where}.content[{i}]"))
        elif kind == "tool_use":
            calls.append(_tool_call(block, f"{where}.content[{i}]"))
        elif kind not in DROPPED_BLOCKS:
            raise _unknown_block(kind, f"{where}.content[{i}]", "text, tool_use or thinking")
    text = "".join(texts)
    if not calls:
        # A turn of thinking alone says nothing a chat channel can take.
        return [{"role": "assistant", "content": text}] if text else []
    return [{"role": "assistant", "content": text or None, "tool_calls": calls}]


def _user(blocks: list[Payload], where: str) -> list[Payload]:
    results: list[Payload] = []
    parts: list[Payload] = []
    for i, block in enumerate(blocks):
        at, kind = f"{where}.content[{i}]", block["type"]
        if kind == "tool_result":
            result, images = _tool_result(block, at)
            results.append(result)
            parts += images  # a tool message holds text only: its images follow as the user's
        elif kind == "text":
            parts.append(_cached({"type": "text", "text": _text(block, at)}, block))
        elif kind == "image":
            parts.append(_cached(_image(block, at), block))
        elif kind == "document":
            parts.append(_document(block, at))
        elif kind not in DROPPED_BLOCKS:
            raise _unknown_block(kind, at, "text, image, document or tool_result")
    if not parts:
        return results
    if all(part["type"] == "text" and "cache_control" not in part for part in parts):
        # Plain text for the many channels that take no list of parts.
        return [*results, {"role": "user", "content": "\n\n".join(p["text"] for p in parts)}]
    return [*results, {"role": "user", "content": parts}]


def _text(block: Payload, where: str) -> str:
    if not isinstance(block.get("text"), str):
        raise errors.bad_field("messages", f"'{where}.text' must be a string.")
    return str(block["text"])


def _tool_call(block: Payload, where: str) -> Payload:
    if not (
        isinstance(block.get("id"), str) and block["id"] and isinstance(block.get("name"), str)
    ):
        raise errors.bad_field(
            "messages", f"'{where}' (tool_use) needs an 'id' and a 'name', both strings."
        )
    if not isinstance(block.get("input", {}), dict):
        raise errors.bad_field("messages", f"'{where}.input' must be an object.")
    arguments = json.dumps(block.get("input", {}), ensure_ascii=False)
    return {
        "id": block["id"],
        "type": "function",
        "function": {"name": block["name"], "arguments": arguments},
    }


def _tool_result(block: Payload, where: str) -> tuple[Payload, list[Payload]]:
    """A tool's result as a tool message, and the images it holds."""
    if not (isinstance(block.get("tool_use_id"), str) and block["tool_use_id"]):
        raise errors.bad_field(
            "messages",
            f"'{where}' (tool_result) needs the 'tool_use_id' of the tool_use it answers.",
        )
    content = block.get("content")
    texts: list[str] = []
    images: list[Payload] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for i, inner in enumerate(content):
            at = f"{where}.content[{i}]"
            kind = _block(inner, at)["type"]
            if kind == "text":
                texts.append(_text(inner, at))
            elif kind == "image":
                images.append(_image(inner, at))
            else:
                raise _unknown_block(kind, at, "text or image")
    elif content is not None:
        raise errors.bad_field(
            "messages", f"'{where}.content' must be a string or a list of text and image blocks."
        )
    if block.get("is_error") is True:  # chat has no flag for it: the model reads it instead
        texts.insert(0, "The tool reported an error:")
    said: str | list[Payload] = "\n".join(texts)
    if "cache_control" in block:
        said = [_cached({"type": "text", "text": "\n".join(texts)}, block)]
    message = {"role": "tool", "tool_call_id": block["tool_use_id"], "content": said}
    return message, images


def _image(block: Payload, where: str) -> Payload:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if isinstance(media_type, str) and isinstance(data, str):
            return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if (
        isinstance(source, dict)
        and source.get("type") == "url"
        and isinstance(source.get("url"), str)
    ):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise errors.bad_field(
        "messages",
        f"'{where}.source' must be "
        '{"type": "base64", "media_type": "image/png", "data": "…"} or '
        '{"type": "url", "url": "https://…"} (files uploaded to Anthropic are not available '
        "here).",
    )


def _document(block: Payload, where: str) -> Payload:
    """A PDF as a chat file part, or a plain-text document as text."""
    source = block.get("source")
    if (
        isinstance(source, dict)
        and source.get("type") == "text"
        and isinstance(source.get("data"), str)
    ):
        return {"type": "text", "text": source["data"]}
    if (
        isinstance(source, dict)
        and source.get("type") == "base64"
        and source.get("media_type") == "application/pdf"
        and isinstance(source.get("data"), str)
    ):
        title = block.get("title")
        return {
            "type": "file",
            "file": {
                "filename": title if isinstance(title, str) and title else "document.pdf",
                "file_data": f"data:application/pdf;base64,{source['data']}",
            },
        }
    raise errors.bad_field(
        "messages",
        f"'{where}.source' must be a PDF as "
        '{"type": "base64", "media_type": "application/pdf", "data": "…"} or text as '
        '{"type": "text", "media_type": "text/plain", "data": "…"}.',
    )


def _unknown_block(kind: str, where: str, allowed: str) -> errors.GatewayError:
    return errors.bad_field(
        "messages",
        f"'{where}' is a block of type “{kind[:40]}”, which this turn cannot hold here: "
        f"send {allowed} blocks.",
    )


def _tools(tools: object, choice: object) -> Payload:
    """Anthropic's custom tools as chat functions, and the tool choice; its server tools are
    left out (they run at Anthropic, which a chat channel is not)."""
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise errors.bad_field("tools", "'tools' must be a list of tools.")
    functions: list[Payload] = []
    left_out: list[str] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise errors.bad_field("tools", f"'tools[{i}]' must be an object.")
        if tool.get("type") not in (None, "custom"):
            left_out.append(str(tool.get("name")))
            continue
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name or not isinstance(schema, dict):
            raise errors.bad_field(
                "tools",
                f"'tools[{i}]' needs a 'name' and an 'input_schema', a JSON Schema such as "
                '{"type": "object", "properties": {"city": {"type": "string"}}}.',
            )
        function: Payload = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        functions.append({"type": "function", "function": function})
    chat: Payload = {"tools": functions} if functions else {}
    if choice is None:
        return chat
    if not isinstance(choice, dict) or choice.get("type") not in (*TOOL_CHOICES, "tool"):
        raise errors.bad_field(
            "tool_choice",
            '\'tool_choice\' must be {"type": "auto"}, {"type": "any"}, '
            '{"type": "none"} or {"type": "tool", "name": "…"}.',
        )
    if choice["type"] == "tool":
        name = choice.get("name")
        if name in left_out:
            return chat  # a server tool, left out with the tools
        if not any(f["function"]["name"] == name for f in functions):
            raise errors.bad_field(
                "tool_choice", "'tool_choice.name' must be the name of one of 'tools'."
            )
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif functions:
        chat["tool_choice"] = TOOL_CHOICES[choice["type"]]
    if functions and choice.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False
    return chat


# The answer


def message(answer: bytes, chat: Payload, message_id: str, usage: Usage) -> Payload:
    """A whole chat answer as a Message; its usage is what the call is billed for."""
    choice = _first_choice(json_object(answer))
    reply = _object(choice.get("message"))
    content: list[Payload] = []
    text = reply.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for i, call in enumerate(_list(reply.get("tool_calls"))):
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            function = call["function"]
            content.append(
                {
                    "type": "tool_use",
                    "id": _tool_use_id(call.get("id"), message_id, i),
                    "name": str(function.get("name") or ""),
                    "input": _arguments(function.get("arguments")),
                }
            )
    stop_reason, stop_sequence = _stop(choice, chat, any(b["type"] == "tool_use" for b in content))
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": chat["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_counts(usage),
    }


def usage_counts(usage: Usage) -> Payload:
    """The billed usage as Anthropic counts it: input_tokens without the cache's reads and
    writes, which have counts of their own."""
    writes = usage.cache_write_5m_tokens + usage.cache_write_1h_tokens
    return {
        "input_tokens": usage.prompt_tokens - usage.cache_read_tokens - writes,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation_input_tokens": writes,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        },
        "output_tokens": usage.completion_tokens,
    }


def _first_choice(answer: object) -> dict[str, Any]:
    choices = _list(_object(answer).get("choices"))
    return _object(choices[0]) if choices else {}


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _tool_use_id(call_id: object, message_id: str, index: int) -> str:
    return call_id if isinstance(call_id, str) and call_id else f"toolu_{message_id}_{index}"


def _arguments(arguments: object) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's `input` is; {} when they are none."""
    parsed = json_object(arguments) if isinstance(arguments, str) else None
    return parsed or {}


def _stop(choice: dict[str, Any], chat: Payload, called: bool) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence). Which stop sequence ended the answer shows only where the
    channel says it (vLLM's `stop_reason`); otherwise it is an end_turn."""
    finish = choice.get("finish_reason")
    finish = finish if isinstance(finish, str) else "stop"
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str) and matched in (chat.get("stop") or []):
        return "stop_sequence", matched
    if called and finish == "stop":
        return "tool_use", None
    return STOP_REASONS.get(finish, "end_turn"), None


# The stream


def event(kind: str, data: Payload) -> bytes:
    """One server-sent event, as Anthropic sends them."""
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), json.dumps({"type": kind, **data}).encode())


BROKEN = event(
    "error",
    {
        "error": {
            "type": "api_error",
            "message": "The upstream stream broke off. Retry the request.",
        }
    },
)


class MessageStream:
    """Turns a chat completion's chunks into Anthropic's stream events: message_start, then a
    content block at a time (text_delta, or input_json_delta for a tool call), then, once the
    usage is known, message_delta and message_stop."""

    def __init__(self, chat: Payload, message_id: str, input_tokens: int) -> None:
        self.chat = chat
        self.message_id = message_id
        self.input_tokens = input_tokens
        self.blocks = 0  # content blocks started
        self.open: int | None = None  # the block being streamed
        self.text_block: int | None = None  # the open block, when it is text
        self.tool_blocks: dict[int, int] = {}  # chat tool call index → block
        self.finish: dict[str, Any] = {}  # the choice's finish_reason (and stop_reason)
        self.usage: object = None  # the channel's usage chunk
        self.content_chunks = 0  # chunks with text or arguments, about a token each

    def start(self) -> bytes:
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.chat["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return event("message_start", {"message": message}) + event("ping", {})

    def feed(self, line: bytes) -> bytes:
        """The events for one line of the chat stream (none for most of what is not content)."""
        line = line.strip()
        if not line.startswith(b"data:"):
            return b""
        chunk = json_object(line[5:].strip())  # [DONE] too is no object
        if chunk is None:
            return b""
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choice = _first_choice(chunk)
        if choice.get("finish_reason"):
            self.finish = choice
        delta = _object(choice.get("delta"))
        out = b""
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.text_block is None:
                out += self._open({"type": "text", "text": ""})
                self.text_block = self.blocks - 1
            out += self._delta(self.text_block, {"type": "text_delta", "text": text})
        for call in _list(delta.get("tool_calls")):
            if isinstance(call, dict):
                out += self._tool_call(call)
        return out

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        index = call["index"] if isinstance(call.get("index"), int) else 0
        function = _object(call.get("function"))
        out = b""
        if index not in self.tool_blocks:
            block = {
                "type": "tool_use",
                "id": _tool_use_id(call.get("id"), self.message_id, len(self.tool_blocks)),
                "name": str(function.get("name") or ""),
                "input": {},
            }
            out += self._open(block)
            self.tool_blocks[index] = self.blocks - 1
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # Sent to its own block even when a channel interleaves two calls' arguments.
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out += self._delta(self.tool_blocks[index], delta)
        return out

    def _open(self, block: Payload) -> bytes:
        out = self._close()
        self.open, self.blocks = self.blocks, self.blocks + 1
        return out + event("content_block_start", {"index": self.open, "content_block": block})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        index, self.open, self.text_block = self.open, None, None
        return event("content_block_stop", {"index": index})

    def _delta(self, index: int, delta: Payload) -> bytes:
        self.content_chunks += 1
        return event("content_block_delta", {"index": index, "delta": delta})

    def end(self, usage: Usage) -> bytes:
        """The last events, with the usage the call is billed for."""
        stop_reason, stop_sequence = _stop(self.finish, self.chat, bool(self.tool_blocks))
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        return (
            self._close()
            + event("message_delta", {"delta": delta, "usage": usage_counts(usage)})
            + event("message_stop", {})
        )
