"""A channel that answers in process, for the demo and tests: deterministic token counts, with
a configurable latency and error rate; an image model gets a small PNG of one colour, from the
prompt. Its settings live in Channel.simulator:

    {"latency_ms": 0, "error_rate": 0.0, "completion_tokens": 24}
"""

import asyncio
import base64
import hashlib
import json
import random
import struct
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from relay.adapters.base import Reply
from relay.config import ChannelSnapshot
from relay.metering import Payload, estimate_prompt_tokens

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
    def __init__(
        self,
        status: int,
        payload: dict[str, Any] | None = None,
        chunks: list[bytes] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.status = status
        self._payload = payload
        self._chunks = chunks or []
        self._delay = delay

    async def body(self) -> bytes:
        if self._delay:
            await asyncio.sleep(self._delay)
        return json.dumps(self._payload).encode()

    async def lines(self) -> AsyncIterator[bytes]:
        pause = self._delay / max(len(self._chunks), 1)
        for chunk in self._chunks:
            if pause:
                await asyncio.sleep(pause)
            yield chunk


def _settings(channel: ChannelSnapshot) -> tuple[float, float, int]:
    config = channel.simulator or {}
    return (
        max(float(config.get("latency_ms", 0)), 0) / 1000,
        min(max(float(config.get("error_rate", 0)), 0), 1),
        max(int(config.get("completion_tokens", 24)), 1),
    )


async def call(
    session: aiohttp.ClientSession,
    channel: ChannelSnapshot,
    path: str,
    payload: Payload,
    *,
    stream: bool,
) -> Reply:
    delay, error_rate, completion_tokens = _settings(channel)
    if error_rate and random.random() < error_rate:  # noqa: S311 (simulated failures)
        error = {"error": {"message": "Simulated upstream failure.", "type": "server_error"}}
        return SimulatedReply(500, error, delay=delay)
    model = payload.get("model", "")
    if path == "embeddings":
        return SimulatedReply(200, _embeddings(payload, model), delay=delay)
    if path == "images/generations":
        return SimulatedReply(200, _image(payload), delay=delay)
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
    created = int(time.time())
    answer_id = f"chatcmpl-sim{created}"
    if stream and path == "chat/completions":
        chunks = _stream(answer_id, created, model, words, usage, payload)
        return SimulatedReply(200, chunks=chunks, delay=delay)
    kind, choices = _choices(path, " ".join(words))
    answer = {
        "id": answer_id,
        "object": kind,
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage,
    }
    return SimulatedReply(200, answer, delay=delay)


def _choices(path: str, text: str) -> tuple[str, list[dict[str, Any]]]:
    """The answer's object type, and its one choice."""
    if path == "completions":
        choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": None}
        return "text_completion", [choice]
    message = {"role": "assistant", "content": text}
    return "chat.completion", [{"index": 0, "message": message, "finish_reason": "stop"}]


def _stream(
    answer_id: str,
    created: int,
    model: str,
    words: list[str],
    usage: dict[str, int],
    payload: Payload,
) -> list[bytes]:
    def event(delta: dict[str, str], finish: str | None = None, with_usage: bool = False) -> bytes:
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


def _embeddings(payload: Payload, model: str) -> dict[str, Any]:
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


IMAGE_SIDE = 64


def _image(payload: Payload) -> dict[str, Any]:
    """A 64×64 PNG in one colour drawn from the prompt, inline (there is nowhere to host it)."""
    red, green, blue = hashlib.sha256(str(payload.get("prompt", "")).encode()).digest()[:3]
    encoded = base64.b64encode(_png(bytes((red, green, blue)))).decode()
    if payload.get("response_format") == "url":
        item = {"url": f"data:image/png;base64,{encoded}"}
    else:
        item = {"b64_json": encoded}
    return {"created": int(time.time()), "data": [{**item, "revised_prompt": payload["prompt"]}]}


def _png(rgb: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", IMAGE_SIDE, IMAGE_SIDE, 8, 2, 0, 0, 0)  # 8-bit RGB
    rows = (b"\x00" + rgb * IMAGE_SIDE) * IMAGE_SIDE
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
