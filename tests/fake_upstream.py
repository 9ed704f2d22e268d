"""A local stand-in for an OpenAI-compatible provider, on 127.0.0.1, in a thread.

Tests set `behaviour` to make it fail, stall, drop usage, break a stream, or echo the request
in its answers, streams and errors, and read `received` to see what the gateway sent upstream.
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
        if not payload.get("stream"):
            answer = dict(CHAT, model=payload["model"])
            if self.behaviour.get("echo"):
                message = {"role": "assistant", "content": json.dumps(payload["messages"])}
                answer["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
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
        for i, word in enumerate(words):
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": payload["model"],
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                "usage": None,
            }
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if self.behaviour.get("break_stream") and i == 1:
                request.transport.close()
                return response
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
