"""Any upstream that speaks the OpenAI protocol: OpenAI itself and the many compatible ones."""

import aiohttp

from relay.adapters.base import Reply, UpstreamError


class HttpReply(Reply):
    def __init__(self, response):
        self.response = response
        self.status = response.status

    async def body(self):
        try:
            return await self.response.read()
        except (TimeoutError, aiohttp.ClientError) as error:
            raise UpstreamError(f"body broke off: {type(error).__name__}") from None
        finally:
            self.response.release()

    async def lines(self):
        try:
            async for line in self.response.content:
                yield line
        except (TimeoutError, aiohttp.ClientError) as error:
            raise UpstreamError(f"stream broke off: {type(error).__name__}") from None
        finally:
            self.response.release()

    def close(self):
        self.response.close()


async def call(session, upstream, path, payload, body, *, stream):
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=upstream.connect_timeout, sock_read=upstream.read_timeout
    )
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if upstream.key:
        headers["Authorization"] = f"Bearer {upstream.key}"
    if stream:
        headers["Accept"] = "text/event-stream"
    try:
        response = await session.post(
            f"{upstream.base_url}/{path}",
            data=body,
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
        )
    except (TimeoutError, aiohttp.ClientError) as error:
        raise UpstreamError(f"{type(error).__name__}: {error}") from None
    return HttpReply(response)
