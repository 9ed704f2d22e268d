"""A channel that answers in process, for the demo and tests: deterministic token counts, with
a configurable latency and error rate; an image model gets a small PNG of one colour, from the
prompt. Its settings live in Channel.simulator:

    {"latency_ms": 0, "error_rate": 0.0, "completion_tokens": 24,
     "dialect": "openai", "cache_min_tokens": 1024}

`dialect` is the vendor it speaks as: "openai", or "anthropic" / "gemini", whose native answers
go through those channel kinds' own conversion (relay.adapters.anthropic, .gemini), as a real
vendor's would. It caches prompts as the vendors do: a conversation's earlier turns (its prefix,
from cache_min_tokens up) are read from the cache when the same prefix came within five minutes
(an hour when a breakpoint asks for "ttl": "1h"); otherwise Anthropic writes them, where the
request marks a breakpoint (cache_control), and the others cache them for free. A request with
reasoning_effort spends half its answer on reasoning.
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

from relay.adapters import anthropic, gemini
from relay.adapters.base import Reply
from relay.config import ChannelSnapshot
from relay.metering import Payload, estimate_prompt_tokens

# The vendors whose native answers the simulator can give, as those channel kinds read them.
NATIVE = {"anthropic": anthropic, "gemini": gemini}

# The answer, in whole sentences: as many of these as fit in its length, then the one of
# SHORT_SENTENCES that makes up the rest, so that an answer ends at a sentence's end unless
# max_tokens cut it (then its finish reason says "length"). A word is a token.
SENTENCES = [
    "This is a simulated answer.",
    "It comes from the {model} model.",
    "It costs what a real answer would.",
    "Try the console without a provider key.",
]
SHORT_SENTENCES = {
    1: "Done.",
    2: "That's all.",
    3: "Ask me more.",
    4: "I hope this helps.",
    5: "Thank you for the question.",
    6: "Tell me what else you need.",
}


def answer_words(model: str, count: int) -> list[str]:
    """An answer of `count` words that ends at the end of a sentence."""
    words: list[str] = []
    index = 0
    while True:
        sentence = SENTENCES[index % len(SENTENCES)].format(model=model).split()
        if len(words) + len(sentence) > count:
            break
        words += sentence
        index += 1
    left = count - len(words)
    while left:
        filler = SHORT_SENTENCES[min(left, len(SHORT_SENTENCES))].split()
        words += filler
        left -= len(filler)
    return words


class SimulatedReply(Reply):
    def __init__(
        self,
        status: int,
        payload: dict[str, Any] | bytes | None = None,
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
        if isinstance(self._payload, bytes):
            return self._payload
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


CACHE_MIN_TOKENS = 1024  # the vendors' smallest cacheable prompt
CACHE_SECONDS = {"5m": 300, "1h": 3600}


class PromptCache:
    """The prefixes this process has seen, by a digest of their text, until they expire."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.expiry: dict[bytes, float] = {}

    def look_up(self, key: bytes, ttl: float) -> bool:
        """Whether `key` is cached; it is cached for `ttl` seconds from now either way."""
        now = time.monotonic()
        hit = self.expiry.get(key, 0.0) > now
        if len(self.expiry) >= self.size and key not in self.expiry:
            self.expiry = {k: t for k, t in self.expiry.items() if t > now}
            if len(self.expiry) >= self.size:
                self.expiry.clear()
        self.expiry[key] = max(self.expiry.get(key, 0.0), now + ttl)
        return hit


PROMPT_CACHE = PromptCache()


def _cache_counts(
    channel: ChannelSnapshot, payload: Payload, prompt_tokens: int, dialect: str
) -> tuple[int, int, int]:
    """(cache read, 5-minute write, 1-hour write) for a chat request's prompt: its prefix is
    everything but the last message."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        return 0, 0, 0
    prefix = {**payload, "messages": messages[:-1]}
    prefix_tokens = min(estimate_prompt_tokens(prefix, "chat/completions"), prompt_tokens)
    config = channel.simulator or {}
    if prefix_tokens < int(config.get("cache_min_tokens", CACHE_MIN_TOKENS)):
        return 0, 0, 0
    text = json.dumps([channel.id, payload.get("model"), prefix["messages"]], sort_keys=True)
    ttl = "1h" if '"ttl": "1h"' in text else "5m"
    if PROMPT_CACHE.look_up(hashlib.sha256(text.encode()).digest(), CACHE_SECONDS[ttl]):
        return prefix_tokens, 0, 0
    if dialect == "anthropic" and '"cache_control"' in text:
        return (0, prefix_tokens, 0) if ttl == "5m" else (0, 0, prefix_tokens)
    return 0, 0, 0  # written for free, as OpenAI and Gemini cache


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
    words = answer_words(model, completion_tokens)
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
    cut = isinstance(limit, int) and 0 < limit < completion_tokens
    if cut:
        words = words[:limit]
        completion_tokens = len(words)
    prompt_tokens = estimate_prompt_tokens(payload, path)
    dialect = str((channel.simulator or {}).get("dialect", "openai"))
    read, write_5m, write_1h = (
        _cache_counts(channel, payload, prompt_tokens, dialect)
        if path == "chat/completions"
        else (0, 0, 0)
    )
    reasoning = completion_tokens // 2 if payload.get("reasoning_effort") else 0
    if dialect in {"anthropic", "gemini"} and path == "chat/completions":
        counts = {
            "input": prompt_tokens - read - write_5m - write_1h,
            "cache_read": read,
            "cache_write_5m": write_5m,
            "cache_write_1h": write_1h,
            "output": completion_tokens,
            "reasoning": reasoning,
        }
        vendor = NATIVE[dialect]
        native = vendor.simulated(model, words, counts, stream=stream, cut=cut)
        if isinstance(native, list):
            raw = SimulatedReply(200, chunks=native, delay=delay)
        else:
            raw = SimulatedReply(200, native, delay=delay)
        return vendor.reply_of(raw, payload, stream=stream)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if path == "chat/completions":  # as OpenAI reports a chat answer's usage
        usage["prompt_tokens_details"] = {"cached_tokens": read}
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    created = int(time.time())
    answer_id = f"chatcmpl-sim{created}"
    if stream and path == "chat/completions":
        chunks = _stream(answer_id, created, model, words, usage, payload, cut=cut)
        return SimulatedReply(200, chunks=chunks, delay=delay)
    kind, choices = _choices(path, " ".join(words), "length" if cut else "stop")
    answer = {
        "id": answer_id,
        "object": kind,
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage,
    }
    return SimulatedReply(200, answer, delay=delay)


def _choices(path: str, text: str, finish: str) -> tuple[str, list[dict[str, Any]]]:
    """The answer's object type, and its one choice."""
    if path == "completions":
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        return "text_completion", [choice]
    message = {"role": "assistant", "content": text}
    return "chat.completion", [{"index": 0, "message": message, "finish_reason": finish}]


def _stream(
    answer_id: str,
    created: int,
    model: str,
    words: list[str],
    usage: dict[str, Any],
    payload: Payload,
    *,
    cut: bool,
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
    chunks.append(event({}, finish="length" if cut else "stop"))
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
