"""Any upstream that speaks the OpenAI protocol: OpenAI itself and the many compatible ones."""

import json
from collections.abc import AsyncIterator

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from relay.adapters.base import Reply, UpstreamError
from relay.config import ChannelSnapshot
from relay.metering import Payload


class HttpReply(Reply):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.status = response.status

    async def body(self) -> bytes:
        try:
            return await self.response.read()
        except (TimeoutError, aiohttp.ClientError) as error:
            raise UpstreamError(f"body broke off: {type(error).__name__}") from None
        finally:
            self.response.release()

    async def lines(self) -> AsyncIterator[bytes]:
        try:
            async for line in self.response.content:
                yield line
        # A line past aiohttp's limit (LineTooLong, whose text quotes the line): unreadable.
        except (TimeoutError, aiohttp.ClientError, HttpProcessingError) as error:
            raise UpstreamError(f"stream broke off: {type(error).__name__}") from None
        finally:
            self.response.release()

    def close(self) -> None:
        self.response.close()


async def post(
    session: aiohttp.ClientSession,
    channel: ChannelSnapshot,
    url: str,
    body: bytes,
    headers: dict[str, str],
) -> aiohttp.ClientResponse:
    """POSTs to a channel, within its timeouts; a channel that cannot be reached raises
    UpstreamError. Every kind that speaks HTTP sends this way."""
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=channel.connect_timeout, sock_read=channel.read_timeout
    )
    try:
        return await session.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        )
    except (TimeoutError, aiohttp.ClientError) as error:
        raise UpstreamError(f"{type(error).__name__}: {error}") from None


async def call(
    session: aiohttp.ClientSession,
    channel: ChannelSnapshot,
    path: str,
    payload: Payload,
    *,
    stream: bool,
) -> Reply:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if channel.key:
        headers["Authorization"] = f"Bearer {channel.key}"
    if stream:
        headers["Accept"] = "text/event-stream"
    body = json.dumps(payload).encode()
    return HttpReply(await post(session, channel, f"{channel.base_url}/{path}", body, headers))
