"""A local stand-in for an OpenAI-compatible provider, on 127.0.0.1, in a thread.

Tests set `behaviour` to make it fail, stall, drop usage, break a stream or send junk in it,
send a line too long to read, end with another finish reason, or echo the request in its
answers, streams and errors, and
read `received` to see what the gateway sent upstream. Given tools and a user's message last,
it calls the first tool (as a model does), streamed in pieces or, with `whole_calls`, in one
chunk; given the tool's result, it answers in text.
Also used by the benchmarks as the fixed-answer upstream.
"""

import asyncio
import json
import socket
import threading

from aiohttp import web

CHAT = {
    "id": "chatcmpl-fake",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "upstream-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from upstream!"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
}


# A 1×1 PNG, base64.
PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9"
    "awAAAABJRU5ErkJggg=="
)


def _tool_call(payload):
    """A call of the first tool offered, when the last message is the user's."""
    tools, messages = payload.get("tools"), payload.get("messages")
    if not (isinstance(tools, list) and tools and isinstance(messages, list) and messages):
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    function = tools[0].get("function") if isinstance(tools[0], dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return {
        "id": "call_fake1",
        "type": "function",
        "function": {
            "name": name if isinstance(name, str) else "tool",
            "arguments": json.dumps({"city": "Paris"}),
        },
    }


class FakeUpstream:
    def __init__(self, *, key="sk-upstream-secret"):
        self.key = key
        self.behaviour = {}
        self.received = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
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
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/images/generations", self.images)
        runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024)
        self.loop.run_until_complete(site.start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    async def _common(self, request):
        body = await request.read()
        payload = json.loads(body)
        self.received.append(
            {"path": request.path, "headers": dict(request.headers), "payload": payload}
        )
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return payload, web.json_response({"error": {"message": "bad key"}}, status=401)
        status = self.behaviour.get("status")
        if status:
            message = f"upstream says {status}"
            if self.behaviour.get("echo"):  # as providers quote the request in their errors
                message += f" about {json.dumps(payload)}"
            return payload, web.json_response(
                {"error": {"message": message, "type": "upstream"}}, status=status
            )
        delay = self.behaviour.get("delay")
        if delay:
            await asyncio.sleep(delay)
        return payload, None

    async def chat(self, request):
        payload, refusal = await self._common(request)
        if refusal:
            return refusal
        tool_call = _tool_call(payload)
        finish = "tool_calls" if tool_call else self.behaviour.get("finish_reason", "stop")
        if not payload.get("stream"):
            answer = dict(CHAT, model=payload["model"])
            if self.behaviour.get("echo"):
                message = {"role": "assistant", "content": json.dumps(payload["messages"])}
                answer["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
            elif tool_call:
                message = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
                answer["choices"] = [{"index": 0, "message": message, "finish_reason": finish}]
            elif finish != "stop":
                answer["choices"] = [dict(CHAT["choices"][0], finish_reason=finish)]
            if self.behaviour.get("no_usage"):
                answer = {k: v for k, v in answer.items() if k != "usage"}
            if "usage" in self.behaviour:
                answer["usage"] = self.behaviour["usage"]
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        words = ["Hello", " from", " upstream", "!"]
        if self.behaviour.get("echo"):
            words = [json.dumps(payload["messages"]), " and", " that", "."]
        deltas = [{"content": word} for word in words]
        if tool_call and self.behaviour.get("whole_calls"):  # as vLLM and Ollama send them
            deltas = [{"tool_calls": [{"index": 0, **tool_call}]}]
        elif tool_call:
            function = tool_call["function"]
            arguments = function["arguments"]
            half = len(arguments) // 2
            deltas = [
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": tool_call["id"],
                            "type": "function",
                            "function": {"name": function["name"], "arguments": ""},
                        }
                    ]
                },
                {"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]},
                {"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]},
            ]
        for i, delta in enumerate(deltas):
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": payload["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                "usage": None,
            }
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if self.behaviour.get("junk_chunk") and i == 0:  # JSON nested past any parser
                await response.write(b"data: " + b"[" * 100_000 + b"\n\n")
            if self.behaviour.get("huge_line") and i == 0:  # past aiohttp's line limit
                await response.write(b'data: {"text": "' + b"PRIVATE " * 100_000 + b'"}\n\n')
            if self.behaviour.get("break_stream") and i == 1:
                request.transport.close()
                return response
        last = {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": payload["model"],
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
            "usage": None,
        }
        await response.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        wants_usage = (payload.get("stream_options") or {}).get("include_usage")
        if wants_usage and not self.behaviour.get("no_usage"):
            usage = {
                "id": "c",
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": self.behaviour.get(
                    "usage", {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
                ),
            }
            await response.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    async def images(self, request):
        _payload, refusal = await self._common(request)
        if refusal:
            return refusal
        return web.json_response(
            {"created": 1700000000, "data": [{"b64_json": PIXEL, "revised_prompt": "a pixel"}]}
        )

    async def completions(self, request):
        payload, refusal = await self._common(request)
        if refusal:
            return refusal
        return web.json_response(
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 1700000000,
                "model": payload["model"],
                "choices": [
                    {"index": 0, "text": "upstream text", "finish_reason": "stop", "logprobs": None}
                ],
                "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
            }
        )

    async def embeddings(self, request):
        payload, refusal = await self._common(request)
        if refusal:
            return refusal
        inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
        return web.json_response(
            {
                "object": "list",
                "model": payload["model"],
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                    for i, _ in enumerate(inputs)
                ],
                "usage": {"prompt_tokens": 6, "total_tokens": 6},
            }
        )
