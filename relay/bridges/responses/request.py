"""A Responses request as a chat completion request: instructions and input items become
messages, function tools become chat tools; what chat cannot carry is refused, saying what to
send instead."""

from typing import NoReturn, TypeIs

from relay import errors
from relay.metering import Payload

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
# OpenAI's own tools, run by OpenAI beside the model: a chat channel has nothing to run them.
BUILT_IN_TOOLS = {
    "web_search",
    "web_search_preview",
    "web_search_2025_08_26",
    "web_search_preview_2025_03_11",
    "file_search",
    "computer",
    "computer_use",
    "computer_use_preview",
    "code_interpreter",
    "image_generation",
    "mcp",
    "tool_search",
}
# Tools your program runs, but in shapes of their own (free-form text, a shell's actions) that
# chat completions cannot express: only function tools have a counterpart there.
OWN_SHAPE_TOOLS = {"custom", "local_shell", "shell", "apply_patch"}
TOOL_CHOICES = {"auto", "none", "required"}
RESEND = (
    "Send the whole conversation as 'input' items each time: the earlier input, the output "
    "items of each response, then the new items. Nothing was charged."
)


def not_stored(param: str) -> errors.GatewayError:
    """A request that builds on an earlier response, which the gateway did not keep."""
    return errors.GatewayError(
        400,
        "response_not_stored",
        f"'{param}' needs a response kept by the server, and this gateway keeps none (it "
        f"stores no request or response content). {RESEND}",
        param=param,
    )


def no_stored_responses() -> errors.GatewayError:
    """/v1/responses/{id}: retrieving, deleting, cancelling, listing input items."""
    return errors.GatewayError(
        404,
        "response_not_stored",
        "This gateway keeps no responses (it stores no request or response content), so none "
        "can be retrieved, deleted, cancelled or listed. Keep what you need of an answer as it "
        "arrives; 'store' is accepted, but nothing is stored. " + RESEND,
    )


def chat_request(request: Payload) -> Payload:
    """The chat completion request for a Responses request (its model already checked)."""
    for field in ("previous_response_id", "conversation"):
        if request.get(field) is not None:
            raise not_stored(field)
    if request.get("background") is True:
        _refuse(
            "background",
            "'background' runs a response to be fetched later, and this gateway keeps no "
            "responses. Leave it out and stream the answer ('stream': true) instead.",
        )
    if request.get("prompt") is not None:
        _refuse(
            "prompt",
            "'prompt' refers to a prompt template kept at OpenAI, which this gateway cannot "
            "read. Send its text as 'instructions' and 'input' instead.",
        )
    chat: Payload = {"model": request["model"], "messages": _messages(request)}
    tools = _tools(request.get("tools"))
    tool_settings = {
        **_tool_choice(request.get("tool_choice")),
        **_options(request, parallel_tool_calls=bool),
    }
    if tools:  # without tools, channels refuse these settings
        chat.update(tools=tools, **tool_settings)
    chat.update(_options(request, temperature=float, top_p=float))
    chat.update(_options(request, user=str, safety_identifier=str, prompt_cache_key=str))
    limit = request.get("max_output_tokens")
    if limit is not None:
        if not _whole(limit) or limit < 1:
            _refuse("max_output_tokens", "'max_output_tokens' must be a positive whole number.")
        chat["max_completion_tokens"] = limit
    chat.update(_text(request.get("text")))
    chat.update(_reasoning(request.get("reasoning")))
    _accepted(request)
    if _options(request, stream=bool).get("stream"):
        chat["stream"] = True
    return chat


def _messages(request: Payload) -> list[Payload]:
    messages: list[Payload] = []
    instructions = request.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        _refuse("instructions", "'instructions' must be a string (the system message).")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    given = request.get("input")
    if isinstance(given, str) and given:
        messages.append({"role": "user", "content": given})
    elif isinstance(given, list) and given:
        for index, item in enumerate(given):
            _add_item(messages, item, f"input[{index}]")
    else:
        _refuse(
            "input",
            "'input' is required: a string, or a list of items such as "
            '{"role": "user", "content": "Hello"}.',
        )
    if not any(message["role"] != "system" for message in messages):
        _refuse("input", "'input' holds no message for the model to answer.")
    return messages


def _add_item(messages: list[Payload], item: object, where: str) -> None:
    if not isinstance(item, dict):
        _refuse(where, f"{where} must be an object: a message, a function_call or its output.")
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        messages.append(_message(item, where))
    elif kind == "function_call":
        _add_call(messages, item, where)
    elif kind == "function_call_output":
        messages.append(_call_output(item, where))
    elif kind == "reasoning":
        pass  # a model's own reasoning, encrypted or summed up: no chat channel takes it back
    elif kind == "item_reference":
        raise not_stored(where)
    else:
        _refuse(
            where,
            f"{where} is of type {_quoted(kind)}, which this gateway cannot pass to the model: "
            "send messages, function_call and function_call_output items.",
        )


def _message(item: Payload, where: str) -> Payload:
    role = ROLES.get(_string(item.get("role")) or "")
    if role is None:
        _refuse(
            f"{where}.role",
            f"{where}.role must be one of 'user', 'assistant', 'system' or 'developer'.",
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        _refuse(f"{where}.content", f"{where}.content must be a string or a list of parts.")
    parts = [_part(part, f"{where}.content[{i}]") for i, part in enumerate(content)]
    if role == "user":
        return {"role": role, "content": parts}
    if any(part["type"] != "text" for part in parts):
        _refuse(f"{where}.content", f"Only a user's message may hold images ({where}).")
    # Text alone, as one string: what every chat channel takes from these roles.
    return {"role": role, "content": "".join(part["text"] for part in parts)}


def _part(part: object, where: str) -> Payload:
    kind = _string(part.get("type")) if isinstance(part, dict) else None
    if isinstance(part, dict) and kind in {"input_text", "output_text", "refusal"}:
        text = part.get("refusal" if kind == "refusal" else "text")
        if isinstance(text, str):
            return {"type": "text", "text": text}
        _refuse(where, f"{where} needs its text as a string.")
    if isinstance(part, dict) and kind == "input_image":
        url = part.get("image_url")
        if part.get("file_id") is not None:
            _refuse(
                where,
                f"{where} names an uploaded file ('file_id'), and this gateway cannot read "
                "files kept at OpenAI. Send the image as 'image_url': an https URL or a "
                "data:image/…;base64 URL.",
            )
        if not isinstance(url, str) or not url:
            _refuse(where, f"{where} needs 'image_url': an https URL or a data: URL.")
        image: Payload = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    _refuse(
        where,
        f"{where} is of type {_quoted(kind)}: send 'input_text' or 'input_image' parts "
        "(files as text, or images as data: URLs).",
    )


def _add_call(messages: list[Payload], item: Payload, where: str) -> None:
    """A function call the model made: consecutive ones (parallel calls), and the text said
    just before them, are one assistant message in chat."""
    fields = [item.get("call_id"), item.get("name"), item.get("arguments")]
    if not all(isinstance(field, str) and field for field in fields[:2]) or not isinstance(
        fields[2], str
    ):
        _refuse(where, f"{where} needs 'call_id', 'name' and 'arguments' as strings.")
    call_id, name, arguments = fields
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _call_output(item: Payload, where: str) -> Payload:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str) or not call_id:
        _refuse(where, f"{where} needs 'call_id': the call_id of the function_call it answers.")
    if isinstance(output, list):
        parts = [_part(part, f"{where}.output[{i}]") for i, part in enumerate(output)]
        if any(part["type"] != "text" for part in parts):
            _refuse(where, f"{where}: a function's output may hold text only.")
        output = "".join(part["text"] for part in parts)
    if not isinstance(output, str):
        _refuse(where, f"{where} needs 'output': the function's result as a string.")
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _tools(tools: object) -> list[Payload]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        _refuse("tools", "'tools' must be a list of function tools.")
    return [_tool(tool, f"tools[{index}]") for index, tool in enumerate(tools)]


def _tool(tool: object, where: str) -> Payload:
    kind = _string(tool.get("type")) if isinstance(tool, dict) else None
    if kind in BUILT_IN_TOOLS:
        _refuse(
            "tools",
            f"The built-in tool {_quoted(kind)} ({where}) runs at OpenAI, and this gateway "
            "serves models through chat completions, where only function tools exist. Remove "
            'it, or offer it as a function your program runs: {"type": "function", "name": …, '
            '"parameters": {…}}.',
        )
    if kind in OWN_SHAPE_TOOLS:
        _refuse(
            "tools",
            f"The tool {_quoted(kind)} ({where}) is not a function tool, and this gateway serves "
            "models through chat completions, where only function tools exist. Offer it as a "
            'function with a JSON schema instead: {"type": "function", "name": …, '
            '"parameters": {…}}.',
        )
    if not isinstance(tool, dict) or kind != "function":
        _refuse("tools", f'{where} must be a function tool: {{"type": "function", "name": …}}.')
    name, description = tool.get("name"), tool.get("description")
    parameters, strict = tool.get("parameters"), tool.get("strict")
    if not isinstance(name, str) or not name:
        _refuse("tools", f"{where} needs a 'name'.")
    if not (
        isinstance(description, str | None)
        and isinstance(parameters, dict | None)
        and isinstance(strict, bool | None)
    ):
        _refuse(
            "tools",
            f"{where}: 'description' must be a string, 'parameters' a JSON schema object and "
            "'strict' true or false.",
        )
    function = {"name": name, "description": description, "parameters": parameters}
    return {"type": "function", "function": _present({**function, "strict": strict})}


def _tool_choice(choice: object) -> Payload:
    if choice is None:
        return {}
    if _string(choice) in TOOL_CHOICES:
        return {"tool_choice": choice}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if isinstance(name, str) and name:
            return {"tool_choice": {"type": "function", "function": {"name": name}}}
    _refuse(
        "tool_choice",
        "'tool_choice' must be 'auto', 'none', 'required' or "
        '{"type": "function", "name": …} (only function tools are served here).',
    )


def _text(text: object) -> Payload:
    """`text`: the answer's format, and its verbosity."""
    if text is None:
        return {}
    if not isinstance(text, dict):
        _refuse("text", '\'text\' must be an object such as {"format": {"type": "text"}}.')
    chat: Payload = {}
    verbosity = text.get("verbosity")
    if verbosity is not None:
        if not isinstance(verbosity, str):
            _refuse("text", "'text.verbosity' must be 'low', 'medium' or 'high'.")
        chat["verbosity"] = verbosity
    form = text.get("format")
    kind = form.get("type") if isinstance(form, dict) else None
    if form is None or kind == "text":
        return chat
    if kind == "json_object":
        return {**chat, "response_format": {"type": "json_object"}}
    if kind == "json_schema" and isinstance(form, dict):
        name, schema = form.get("name"), form.get("schema")
        if isinstance(name, str) and name and isinstance(schema, dict):
            details = {key: form.get(key) for key in ("description", "strict")}
            schema_format = {"name": name, "schema": schema, **_present(details)}
            return {
                **chat,
                "response_format": {"type": "json_schema", "json_schema": schema_format},
            }
    _refuse(
        "text",
        '\'text.format\' must be {"type": "text"}, {"type": "json_object"} or '
        '{"type": "json_schema", "name": …, "schema": {…}}.',
    )


def _reasoning(reasoning: object) -> Payload:
    if reasoning is None:
        return {}
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else 0
    if not isinstance(effort, str | None):
        _refuse(
            "reasoning",
            "'reasoning' must be an object such as {\"effort\": \"medium\"}: 'effort' a string.",
        )
    return {"reasoning_effort": effort} if effort else {}  # its summary: no chat channel gives one


def _options(request: Payload, **kinds: type) -> Payload:
    """Fields passed on as they are, once of the right kind; null means the default."""
    passed: Payload = {}
    for field, kind in kinds.items():
        value = request.get(field)
        if value is None:
            continue
        if kind is float:
            right = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            right = isinstance(value, kind)
        if not right:
            described = {bool: "true or false", float: "a number", str: "a string"}[kind]
            _refuse(field, f"'{field}' must be {described}.")
        passed[field] = value
    return passed


def _accepted(request: Payload) -> None:
    """Fields accepted and left out of the chat request: nothing is stored whatever `store`
    says, metadata is only echoed, and the rest has no counterpart in chat."""
    _options(request, store=bool)
    metadata = request.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(value, str) for value in metadata.values())
    ):
        _refuse("metadata", "'metadata' must be an object of string values.")
    if request.get("truncation") is not None and _string(request["truncation"]) not in {
        "auto",
        "disabled",
    }:
        _refuse("truncation", "'truncation' must be 'auto' or 'disabled'.")
    include = request.get("include")
    if include is not None and not (
        isinstance(include, list) and all(isinstance(name, str) for name in include)
    ):
        _refuse("include", "'include' must be a list of strings.")


def _refuse(param: str, message: str) -> NoReturn:
    raise errors.bad_field(param, message)


def _whole(value: object) -> TypeIs[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _present(fields: Payload) -> Payload:
    return {key: value for key, value in fields.items() if value is not None}


def _string(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _quoted(value: object) -> str:
    return f"'{value}'" if isinstance(value, str) else "missing"
