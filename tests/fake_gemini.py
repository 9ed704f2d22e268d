"""A local stand-in for Google's Gemini API (generativelanguage v1beta), on 127.0.0.1, in a thread.

It answers POST /v1beta/models/{model}:generateContent and :streamGenerateContent?alt=sse with
answers recorded in the shapes of Gemini's API reference (GenerateContentResponse, its SSE
stream, google.rpc.Status errors). Like Gemini it reads the key from `x-goog-api-key` (or
`?key=`), answers a missing key 403 PERMISSION_DENIED and a wrong one 400 with the reason
API_KEY_INVALID, and refuses fields it does not know, so that what the gateway sends is held
to the real request's schema.

`behaviour` switches it: "answer" picks a recorded answer ("plain", "thinking", "tool_call",
"blocked"; by default a call of the first declared function when the last turn is the user's
text, else "plain"); "error" answers a recorded error ("unavailable", "exhausted",
"bad_request", "not_found"); "break_stream" ends a stream before its finish reason,
"error_event" sends an error event in the middle; "junk" answers a 200 that is not JSON.
`received` lists what came in: the raw path, the query, the key header and the JSON.
"""

import asyncio
import copy
import json
import re
import socket
import threading

from aiohttp import web

MODEL = "gemini-2.5-flash"
SIGNATURE = "CiQB0e2Kb7rTlMfVs+Zz1OQa8bK2d1qHfNwqC4ZrU3n0dGVzdA=="

# generateContent answers

PLAIN = {
    "candidates": [
        {
            "content": {"parts": [{"text": "Hello from Gemini!"}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 9,
        "candidatesTokenCount": 5,
        "totalTokenCount": 14,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9}],
    },
    "modelVersion": MODEL,
    "responseId": "mAitaLmkHPPlz7IPvtfUqQ4",
}

# With a cached context, thinking, and its thought summary (thinkingConfig.includeThoughts).
THINKING = {
    "candidates": [
        {
            "content": {
                "parts": [
                    {
                        "text": "**Weighing the question**\n\nThe user asks for a number.",
                        "thought": True,
                    },
                    {"text": "The answer is 42."},
                ],
                "role": "model",
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 2061,
        "candidatesTokenCount": 7,
        "totalTokenCount": 2380,
        "cachedContentTokenCount": 2048,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 2061}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 2048}],
        "thoughtsTokenCount": 312,
    },
    "modelVersion": MODEL,
    "responseId": "Rrl6aJbdGe6pnvgP0q7SwQ8",
}

TOOL_CALL = {
    "candidates": [
        {
            "content": {
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": SIGNATURE,
                    }
                ],
                "role": "model",
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 53,
        "candidatesTokenCount": 15,
        "totalTokenCount": 139,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 53}],
        "thoughtsTokenCount": 71,
    },
    "modelVersion": MODEL,
    "responseId": "k3N6aO2hJ4mQz7IP8sKa4Ao",
}

BLOCKED = {
    "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
    "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
    "modelVersion": MODEL,
    "responseId": "x0V6aKSIMpmQz7IPqJ2U2Qw",
}

ANSWERS = {"plain": PLAIN, "thinking": THINKING, "tool_call": TOOL_CALL, "blocked": BLOCKED}


# streamGenerateContent?alt=sse: partial answers, usage on each, complete on the last.


def _partial(parts, usage, finish=None, response_id="mAitaLmkHPPlz7IPvtfUqQ4"):
    candidate = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": MODEL,
        "responseId": response_id,
    }


_PROMPT_ONLY = {
    "promptTokenCount": 9,
    "totalTokenCount": 9,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9}],
}
STREAM_PLAIN = [
    _partial([{"text": "Hello"}], _PROMPT_ONLY),
    _partial([{"text": " from Gemini"}], _PROMPT_ONLY),
    _partial([{"text": "!"}], PLAIN["usageMetadata"], "STOP"),
]
_THINKING_SO_FAR = {
    "promptTokenCount": 2061,
    "totalTokenCount": 2373,
    "cachedContentTokenCount": 2048,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 2061}],
    "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 2048}],
    "thoughtsTokenCount": 312,
}
STREAM_THINKING = [
    _partial(
        [{"text": "**Weighing the question**\n\nThe user asks for a number.", "thought": True}],
        _THINKING_SO_FAR,
        response_id="Rrl6aJbdGe6pnvgP0q7SwQ8",
    ),
    _partial([{"text": "The answer"}], _THINKING_SO_FAR, response_id="Rrl6aJbdGe6pnvgP0q7SwQ8"),
    _partial(
        [{"text": " is 42."}],
        THINKING["usageMetadata"],
        "STOP",
        response_id="Rrl6aJbdGe6pnvgP0q7SwQ8",
    ),
]
# The call arrives whole; the finish reason follows with an empty text part.
STREAM_TOOL_CALL = [
    _partial(
        TOOL_CALL["candidates"][0]["content"]["parts"],
        {"promptTokenCount": 53, "totalTokenCount": 124, "thoughtsTokenCount": 71},
        response_id="k3N6aO2hJ4mQz7IP8sKa4Ao",
    ),
    _partial(
        [{"text": ""}], TOOL_CALL["usageMetadata"], "STOP", response_id="k3N6aO2hJ4mQz7IP8sKa4Ao"
    ),
]
STREAMS = {"plain": STREAM_PLAIN, "thinking": STREAM_THINKING, "tool_call": STREAM_TOOL_CALL}

# Errors: google.rpc.Status under "error", with the HTTP status.

UNAVAILABLE = {
    "error": {
        "code": 503,
        "message": "The model is overloaded. Please try again later.",
        "status": "UNAVAILABLE",
    }
}
EXHAUSTED = {
    "error": {
        "code": 429,
        "message": "You exceeded your current quota, please check your plan and billing "
        "details. For more information on this error, head to: "
        "https://ai.google.dev/gemini-api/docs/rate-limits.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/"
                        "generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": MODEL},
                        "quotaValue": "10",
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "42s"},
        ],
    }
}
KEY_INVALID = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": "API key not valid. Please pass a valid API key.",
            },
        ],
    }
}
NO_KEY = {
    "error": {
        "code": 403,
        "message": "Method doesn't allow unregistered callers (callers without established "
        "identity). Please use API Key or other form of API consumer identity to call this API.",
        "status": "PERMISSION_DENIED",
    }
}
BAD_REQUEST = {
    "error": {
        "code": 400,
        "message": "* GenerateContentRequest.generation_config.max_output_tokens: "
        "max_output_tokens must be positive.\n",
        "status": "INVALID_ARGUMENT",
    }
}
NOT_FOUND = {
    "error": {
        "code": 404,
        "message": f"models/{MODEL}-preview-01-01 is not found for API version v1beta, or is "
        "not supported for generateContent. Call ListModels to see the list of available "
        "models and their supported methods.",
        "status": "NOT_FOUND",
    }
}
INTERNAL = {
    "error": {
        "code": 500,
        "message": "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        "status": "INTERNAL",
    }
}
ERRORS = {
    "unavailable": UNAVAILABLE,
    "exhausted": EXHAUSTED,
    "bad_request": BAD_REQUEST,
    "not_found": NOT_FOUND,
}

# The request's schema, as far as it is checked: Gemini refuses a field it does not know.
REQUEST_FIELDS = {
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
}
GENERATION_FIELDS = {
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "responseModalities",
    "mediaResolution",
}
PART_FIELDS = {
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "thought",
    "thoughtSignature",
}
PATH = re.compile(
    r"/v1(?:beta)?/models/(?P<model>[\w.-]+):(?P<method>generateContent|streamGenerateContent)"
)


def camel(name):
    """A field's lowerCamelCase JSON name: Gemini, as any proto3 JSON API, takes the proto's
    snake_case name too (Google's SDK sends parameters_json_schema, thinking_budget)."""
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _unknown(name):
    return {
        "error": {
            "code": 400,
            "message": f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.',
            "status": "INVALID_ARGUMENT",
        }
    }


def _invalid(message):
    return {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}


def schema_error(payload):
    """Gemini's 400 for a request it would refuse, or None."""
    if not isinstance(payload, dict):
        return _invalid("Invalid JSON payload received.")
    for name in payload:
        if camel(name) not in REQUEST_FIELDS:
            return _unknown(name)
    for name in payload.get("generationConfig", {}):
        if camel(name) not in GENERATION_FIELDS:
            return _unknown(f"generation_config.{name}")
    contents = payload.get("contents")
    if not contents:
        return _invalid("* GenerateContentRequest.contents: contents is not specified\n")
    for content in contents:
        if content.get("role") not in {"user", "model"}:
            return _invalid("Please use a valid role: user, model.")
        if not content.get("parts"):
            return _invalid(
                "* GenerateContentRequest.contents.parts: contents.parts must not be empty.\n"
            )
        for part in content["parts"]:
            for name in part:
                if camel(name) not in PART_FIELDS:
                    return _unknown(f"contents.parts.{name}")
    return None


def _function_names(payload):
    return [
        declaration["name"]
        for tool in payload.get("tools") or []
        for declaration in tool.get("functionDeclarations") or []
    ]


def _chosen(payload, behaviour):
    """The recorded answer to give: as told, else a call of the first function declared when
    the user has just spoken, else text."""
    if behaviour.get("answer"):
        return behaviour["answer"]
    contents = payload.get("contents") or [{}]
    last = (contents[-1].get("parts") or [{}])[-1]
    if _function_names(payload) and "functionResponse" not in last:
        return "tool_call"
    return "plain"


def _named(answer, payload):
    """A recorded answer for the model asked, calling the first function declared."""
    answer = copy.deepcopy(answer)
    names = _function_names(payload)
    for candidate in answer.get("candidates", []):
        for part in candidate["content"]["parts"]:
            if "functionCall" in part and names:
                part["functionCall"]["name"] = names[0]
    return answer


class FakeGemini:
    def __init__(self, *, key="AIzaSyFake-gemini-key-0123456789abcdef"):
        self.key = key
        self.behaviour = {}
        self.received = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.root = f"http://127.0.0.1:{self.port}"  # for Google's SDK, which adds /v1beta
        self.url = f"{self.root}/v1beta"  # a channel's base URL
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        self.ready.wait(10)
        return self

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self.generate)
        runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        self.loop.run_until_complete(site.start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    async def generate(self, request):
        try:
            payload = json.loads(await request.read())
        except ValueError:
            payload = None
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        self.received.append(
            {
                "path": request.raw_path.split("?")[0],
                "query": dict(request.query),
                "key": key,
                "payload": payload,
            }
        )
        match = PATH.fullmatch(request.raw_path.split("?")[0])
        if not match:
            return web.json_response(NOT_FOUND, status=404)
        if not key:
            return web.json_response(NO_KEY, status=403)
        if key != self.key:
            return web.json_response(KEY_INVALID, status=400)
        if self.behaviour.get("error"):
            error = ERRORS[self.behaviour["error"]]
            return web.json_response(error, status=error["error"]["code"])
        refusal = schema_error(payload)
        if refusal:
            return web.json_response(refusal, status=400)
        if self.behaviour.get("junk"):
            return web.Response(text="<html>Service temporarily unavailable</html>")
        chosen = _chosen(payload, self.behaviour)
        if match["method"] == "generateContent":
            return web.json_response(_named(ANSWERS[chosen], payload))
        if request.query.get("alt") != "sse":  # without alt=sse, a JSON array: not served here
            return web.json_response(_invalid("This fake streams with alt=sse only."), status=400)
        return await self._stream(request, [_named(c, payload) for c in STREAMS[chosen]])

    async def _stream(self, request, chunks):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if self.behaviour.get("break_stream"):
            chunks = chunks[:-1]  # it ends cleanly, but without its last part and finish reason
        for i, chunk in enumerate(chunks):
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
            if self.behaviour.get("error_event") and i == 0:
                await response.write(b"data: " + json.dumps(INTERNAL).encode() + b"\r\n\r\n")
                break
        await response.write_eof()
        return response
