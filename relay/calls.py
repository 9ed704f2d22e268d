"""A call to the API as the gateway handles it: what it knows of the request (Call), the money
held for it (Reservation), and how it ended (Outcome), which is what its log row says."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from logs.ids import uuid7
from relay import errors, http
from relay.config import Line, Price
from relay.metering import Usage
from tokens.cache import TokenSnapshot


@dataclass(slots=True)
class Reservation:
    """Money held for one call: its estimate, at the price and on the line it is charged at,
    from the account's lease and, for a `limited` token, from the token's quota lease too."""

    amount: int
    limited: bool
    price: Price
    line: Line


@dataclass(slots=True)
class Call:
    """One request, as far as the gateway got with it. Who sends it is known once the token is
    authenticated, the model once the body is parsed: a refusal's log row says what was known.
    """

    id: UUID
    created_at: datetime
    started: float  # time.perf_counter()
    client_ip: str | None
    scope: http.Scope
    receive: http.Receive
    send: http.Send
    endpoint: str = ""  # as the log says it: "chat", "embedding", "models" …
    token: TokenSnapshot | None = None
    model: str = ""
    price: Price | None = None  # None: a model we do not price (or not parsed yet)
    stream: bool = False
    prompt_estimate: int = 0  # the prompt's tokens as estimated for its hold
    reservation: Reservation | None = None  # until the call is charged or let go

    @classmethod
    def of(cls, scope: http.Scope, receive: http.Receive, send: http.Send) -> "Call":
        """A call as it arrives."""
        return cls(
            uuid7(),
            datetime.now(UTC),
            time.perf_counter(),
            http.client_ip(scope),
            scope,
            receive,
            send,
        )


@dataclass(slots=True)
class Outcome:
    """How a call ended: the answer (status, body, extra headers) and, for its log row and its
    charge, the usage (None: it costs nothing), the channel that answered and after how many
    retries. For a stream, head and events went out already, and `body` is its last bytes,
    sent once the call is charged."""

    status: int
    body: bytes
    headers: http.Headers = ()
    error_code: str = ""
    usage: Usage | None = None
    channel_id: int | None = None
    retries: int = 0
    ttft_ms: int | None = None
    streamed: bool = False
    logged: bool = True  # False: counted in the rollups, without a log row of its own
    # The body with the charge in it (micro-dollars → bytes), where the protocol has a place
    # for it: set by handlers whose answer reports usage to the client.
    costed: Callable[[int], bytes] | None = None

    @classmethod
    def of_error(
        cls, error: errors.GatewayError, *, channel_id: int | None = None, retries: int = 0
    ) -> "Outcome":
        return cls(
            error.status,
            error.body(),
            http.RETRY if error.retry else http.NO_RETRY,
            error_code=error.code,
            channel_id=channel_id,
            retries=retries,
        )
