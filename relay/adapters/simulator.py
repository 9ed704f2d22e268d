"""A channel that answers in process, for the demo and tests: deterministic token counts, with
a configurable latency and error rate. Its settings live in Channel.simulator:

    {"latency_ms": 0, "error_rate": 0.0, "completion_tokens": 24}
"""

import asyncio
import hashlib
import json
import random
import time

from relay.adapters.base import Reply
from relay.metering import estimate_prompt_tokens

WORDS = [
    "This",
    "is",
    "a",
    "simulated",
    "answer",
    "from",
    "the",
    "{model}",
    "model.",
    "It",
    "costs",
    "what",
    "a",
    "real",
    "answer",
    "of",
    "the",
    "same",
    "length",
    "would,",
    "so",
    "that",
    "you",
    "can",
    "try",
    "the",
    "console",
    "without",
    "a",
    "provider",
    "key.",
]


class SimulatedReply(Reply):
    def __init__(self, status, payload=None, chunks=None, delay=0.0):
        self.status = status
        self._payload = payload
        self._chunks = chunks or []
        self._delay = delay

    async def body(self):
        if self._delay:
            await asyncio.sleep(self._delay)
        return json.dumps(self._payload).encode()

    async def lines(self):
        pause = self._delay / max(len(self._chunks), 1)
        for chunk in self._chunks:
            if pause:
                await asyncio.sleep(pause)
            yield chunk


def _settings(upstream):
    config = upstream.simulator or {}
    return (
        max(float(config.get("latency_ms", 0)), 0) / 1000,
        min(max(float(config.get("error_rate", 0)), 0), 1),
        max(int(config.get("completion_tokens", 24)), 1),
    )


async def call(session, upstream, path, payload, body, *, stream):
    delay, error_rate, completion_tokens = _settings(upstream)
    if error_rate and random.random() < error_rate:  # noqa: S311 (simulated failures)
        error = {"error": {"message": "Simulated upstream failure.", "type": "server_error"}}
        return SimulatedReply(500, error, delay=delay)
    model = payload.get("model", "")
    created = int(time.time())
    if path == "embeddings":
        return SimulatedReply(200, _embeddings(payload, model), delay=delay)
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if isinstance(limit, int) and limit > 0:
        completion_tokens = min(completion_tokens, limit)
    words = [WORDS[i % len(WORDS)].format(model=model) for i in range(completion_tokens)]
    prompt_tokens = estimate_prompt_tokens(payload, path)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    answer_id = f"chatcmpl-sim{created}"
    if path == "completions":
        text = " ".join(words)
        result = {
            "id": answer_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "length", "logprobs": None}],
            "usage": usage,
        }
        return SimulatedReply(200, result, delay=delay)
    if not stream:
        result = {
            "id": answer_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(words)},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        return SimulatedReply(200, result, delay=delay)
    return SimulatedReply(
        200, chunks=_stream(answer_id, created, model, words, usage, payload), delay=delay
    )


def _stream(answer_id, created, model, words, usage, payload):
    def event(delta, finish=None, with_usage=False):
        chunk = {
            "id": answer_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": []
            if with_usage
            else [{"index": 0, "delta": delta, "finish_reason": finish}],
            "usage": usage if with_usage else None,
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    chunks = [event({"role": "assistant", "content": ""})]
    chunks += [event({"content": (" " if i else "") + word}) for i, word in enumerate(words)]
    chunks.append(event({}, finish="stop"))
    if (payload.get("stream_options") or {}).get("include_usage"):
        chunks.append(event({}, with_usage=True))
    chunks.append(b"data: [DONE]\n\n")
    return chunks


def _embeddings(payload, model):
    inputs = payload.get("input", "")
    if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    data = []
    for index, text in enumerate(inputs):
        digest = hashlib.sha256(str(text).encode()).digest()
        vector = [round(byte / 255 - 0.5, 6) for byte in digest[:16]]
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = estimate_prompt_tokens(payload, "embeddings")
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
