"""A fixed-answer OpenAI-compatible upstream for benchmarks: the floor to measure against.

python -m tests.bench.upstream --port 9100
"""

import argparse
import json

from aiohttp import web

ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }
).encode()


def _chunk(delta, usage=None, choices=True):
    return (
        b"data: "
        + json.dumps(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}] if choices else [],
                "usage": usage,
            }
        ).encode()
        + b"\n\n"
    )


STREAM = _chunk({"role": "assistant", "content": ""}) + b"".join(
    _chunk({"content": word}) for word in ["Hello", " from", " the", " bench", "!"]
)
STREAM_USAGE = _chunk({}, {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}, False)


async def chat(request):
    body = await request.read()
    if b'"stream": true' not in body and b'"stream":true' not in body:
        return web.Response(body=ANSWER, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(STREAM)
    if b"include_usage" in body:
        await response.write(STREAM_USAGE)
    await response.write(b"data: [DONE]\n\n")
    return response


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, backlog=2048)


if __name__ == "__main__":
    main()
