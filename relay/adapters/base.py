import json
from collections.abc import AsyncIterator


class UpstreamError(Exception):
    """The upstream could not be reached, or broke off. Its text is for staff, never for users:
    it may name the upstream's address (never its key)."""


class Reply:
    """An upstream's answer: the status at once, then the body whole or line by line."""

    status = 200

    async def body(self) -> bytes:
        raise NotImplementedError

    def lines(self) -> AsyncIterator[bytes]:
        """An async iterator over the raw lines of a streamed body, newlines included."""
        raise NotImplementedError

    def close(self) -> None:
        """Frees the connection; the rest of the body is not read."""


class LocalReply(Reply):
    """An answer given without asking the channel: a request its kind cannot take."""

    def __init__(self, status: int, content: bytes) -> None:
        self.status = status
        self.content = content

    async def body(self) -> bytes:
        return self.content

    async def lines(self) -> AsyncIterator[bytes]:
        yield self.content


def error_body(message: str, kind: str, code: str | None, param: str | None = None) -> bytes:
    """An error in OpenAI's shape, as the adapters of other vendors answer theirs."""
    return json.dumps(
        {"error": {"message": message, "type": kind, "code": code, "param": param}}
    ).encode()
