"""Streams as the bridged protocols relay them (relay.handlers.openai.relay_stream): a chunk no
parser can read is passed over (chat passes its chunks on as they are), and a chunk the relay
cannot handle ends the stream as broken, billed for what was served, instead of an answer sent
free and a second response head."""

import asyncio

import anthropic
import openai
import pytest

from logs.models import RequestLog
from relay.adapters import Reply
from relay.calls import Call
from relay.handlers.openai import relay_stream
from tests.conftest import balance_of
from tests.relay.conftest import wait_until

HELLO = [{"role": "user", "content": "Hello"}]


def test_junk_in_a_stream_is_passed_over_by_the_bridges(live_site, api, upstream, alice):
    upstream.behaviour["junk_chunk"] = True
    claude = anthropic.Anthropic(base_url=live_site.url, api_key=api.api_key, max_retries=0)
    with claude.messages.stream(model="gpt-4o-mini", max_tokens=32, messages=HELLO) as stream:
        message = stream.get_final_message()
    events = list(api.responses.create(model="gpt-4o-mini", input="Hello", stream=True))
    assert message.content[0].text == "Hello from upstream!"
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Hello from upstream!"
    rows = wait_until(lambda: RequestLog.objects.filter(stream=True).count() == 2)
    assert rows
    for row in RequestLog.objects.filter(stream=True):
        assert (row.status, row.error_code, row.usage_estimated) == (200, "", False)
    wait_until(lambda: balance_of(alice) < 10_000_000, message="the streams charged")


class Lines(Reply):
    def __init__(self, lines):
        self._lines = lines
        self.closed = False

    async def lines(self):
        for line in self._lines:
            yield line

    def close(self):
        self.closed = True


def test_a_chunk_the_relay_cannot_handle_ends_the_stream_as_broken():
    sent = []

    async def send(message):
        sent.append(message["body"])

    async def receive():
        await asyncio.Event().wait()  # the client stays

    def translate(line):
        if b"bad" in line:
            raise KeyError(line)  # a translator's bug, for this test
        return line

    async def relay():
        scope = {"type": "http", "client": ("127.0.0.1", 1), "headers": []}
        call = Call.of(scope, receive, send)
        reply = Lines([b"data: one\n\n", b"data: bad\n\n", b"data: three\n\n"])
        return await relay_stream(call, reply, None, translate), reply

    relayed, reply = asyncio.run(relay())
    assert relayed.error_code == "stream_broken"
    assert sent == [b"data: one\n\n"] and reply.closed
    assert relayed.ttft_ms is not None


class Failing(Lines):
    """A channel's reply whose reading fails after its first line, as an adapter's bug would."""

    async def lines(self):
        yield self._lines[0]
        raise TypeError(f"unhashable: {self._lines[1]!r}")


def test_a_reply_that_fails_while_read_ends_the_stream_broken_and_logs_no_content(caplog):
    sent = []

    async def send(message):
        sent.append(message["body"])

    async def receive():
        await asyncio.Event().wait()

    async def relay():
        scope = {"type": "http", "client": ("127.0.0.1", 1), "headers": []}
        call = Call.of(scope, receive, send)
        reply = Failing([b"data: one\n\n", b"PRIVATE answer text"])
        return await relay_stream(call, reply, None, lambda line: line), reply

    relayed, reply = asyncio.run(relay())
    assert relayed.error_code == "stream_broken"
    assert sent == [b"data: one\n\n"] and reply.closed
    assert "TypeError" in caplog.text and "PRIVATE" not in caplog.text


def test_a_line_too_long_to_read_ends_the_stream_broken_and_billed(api, upstream, alice):
    """aiohttp refuses a line past its limit, quoting it: the stream ends broken, billed as
    estimated, and the quote is in no log."""
    upstream.behaviour["huge_line"] = True
    chunks = []
    with pytest.raises(openai.APIError):
        for chunk in api.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True):
            chunks.append(chunk)
    assert chunks and chunks[0].choices[0].delta.content == "Hello"
    row = wait_until(lambda: RequestLog.objects.filter(stream=True).first(), message="log row")
    assert (row.status, row.error_code, row.usage_estimated) == (200, "stream_broken", True)
    assert row.cost > 0
