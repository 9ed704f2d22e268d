"""The /v1 gateway: a plain ASGI application on the hot path of every customer request.

It runs past Django's request cycle (console.asgi sends /v1/ here) but uses the project's
models and settings. Per request it does no database I/O in the common case: the token comes
from an in-process cache, prices and channels from an in-memory snapshot, money from a lease
(billing.holds), and the log row goes to a batch written once a second (logs.writer). Request
and response bodies pass through memory only: they are never stored or logged.

A request goes: the handler of its path (relay.handlers) returns its Outcome; the outcome is
charged and recorded (relay.recording); then its answer goes out.
"""

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys
from collections.abc import Coroutine
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from django.conf import settings

from billing.holds import HoldBook, Refused
from console.lib import invalidation
from relay import auth, errors, handlers, http, recording
from relay.calls import Call, Outcome, Reservation
from relay.config import ConfigCache, RelayConfig, load_config
from relay.database import DatabaseThreads
from relay.errors import GatewayError
from relay.metering import HoldAsk
from relay.peers import Peers
from relay.recorder import Recorder
from relay.routing import Plan, Router
from tokens.cache import TokenCache, TokenSnapshot

log = logging.getLogger(__name__)

# Records not yet in the database beyond which new requests are turned away until it catches
# up: all requests when it is away, one account's when it refuses that account's usage.
MAX_PENDING_RECORDS = 200_000
MAX_SET_ASIDE_RECORDS = 20_000
# Funds below this (micro-dollars) that cannot pay for a request are "used up"; above it, the
# refusal says what the request needs held and what is left.
USED_UP_BELOW = 10_000
# How long the flush and database threads may keep the interpreter from the event loop
# (CPython's default: 5 ms). A flush's Python work (some 10 µs a record) would otherwise
# stall every request in flight in 5 ms slices: p99 at concurrency 50 went from 50-55 ms to
# 30-32 ms with this, at the same requests per second (tests/bench/bench_gateway.py).
SWITCH_INTERVAL_SECONDS = 0.0005


def _hold_refused(
    refusal: Refused, token: TokenSnapshot, ask: HoldAsk, endpoint: str
) -> GatewayError:
    """The error of a request the money does not cover: the quota or balance is used up, or
    what this request needs held is more than what is left."""
    on_token = refusal.code == "token_quota_exceeded"
    available = max(refusal.available, 0)
    fitting = ask.each_covered(available)
    # Used up: less than a cent left, and not enough for this prompt and one output token.
    if not refusal.held and (not available or (not fitting and available < USED_UP_BELOW)):
        return (
            errors.token_quota_exceeded(token.name) if on_token else errors.insufficient_balance()
        )
    return errors.hold_refused(
        token_name=token.name if on_token else None,
        needed=ask.amount,
        available=available,
        held=refusal.held,
        output_tokens=ask.allowance.tokens,
        explicit=ask.allowance.explicit,
        fitting_max_tokens=fitting,
        limit_field=LIMIT_FIELDS.get(endpoint, "max_tokens"),
    )


# The answer's limit as a protocol names it, where not max_tokens.
LIMIT_FIELDS = {"responses": "max_output_tokens"}


def _process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Gateway:
    # Made by start(), afresh for each run.
    session: aiohttp.ClientSession
    router: Router
    stopping: asyncio.Event
    flusher: asyncio.Task[None]  # flushes once a second

    def __init__(self) -> None:
        self.started = False
        self.owner = _process_name()
        self.tokens = TokenCache(in_this_process=False)  # fed by self.apply
        self.db = DatabaseThreads(4, "gateway-db")
        self.token_loads = auth.TokenLoads(self.tokens, self.db)
        self.configs = ConfigCache(lambda: self.db.run(load_config))
        self.peers = Peers(self.owner, self.db, None)
        self.book = HoldBook(self.owner, self.db.run)
        self.recorder = Recorder(self.owner)
        self.refusal_rows = recording.RefusalRows()
        self.tasks: list[asyncio.Task[None]] = []
        self.background: set[asyncio.Future[None]] = set()  # fire-and-forget work

    # Requests

    async def __call__(self, scope: http.Scope, receive: http.Receive, send: http.Send) -> None:
        if scope["type"] != "http":
            return
        if not self.started:
            await self.start()
        call = Call.of(scope, receive, send)
        try:
            route = handlers.route(scope["method"], scope["path"])
            call.endpoint = route.endpoint
            outcome = await route.handler(self, call)
        except GatewayError as error:
            outcome = self.refused(call, error)
        except Exception:
            log.exception("Gateway error on request %s", call.id)
            recording.let_go(self.book, call)
            outcome = Outcome.of_error(errors.internal_error(call.id))
        except BaseException:  # cancelled: what was held is free again
            recording.let_go(self.book, call)
            raise
        # Charged and in the journal before the answer's last byte goes out.
        charged = None
        try:
            charged = recording.settle(self.book, self.recorder, call, outcome)
        except Exception:  # a bug here must not keep the call's money held until a restart
            log.exception("Gateway error settling request %s", call.id)
            recording.let_go(self.book, call)
            if not outcome.streamed:
                outcome = Outcome.of_error(errors.internal_error(call.id))
        body = outcome.body
        if charged is not None and outcome.costed is not None and outcome.status == 200:
            body = outcome.costed(charged)
        if outcome.streamed:
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        headers = outcome.headers
        if charged is not None:  # what the answer cost, on every answer that had money held
            headers = (*headers, (b"x-request-cost", b"%d" % charged))
        if outcome.status >= 400:
            body = handlers.error_body(scope["path"], outcome.status, body)
        await http.respond(send, outcome.status, body, call.id, headers)

    async def admit(self, call: Call) -> tuple[TokenSnapshot, RelayConfig]:
        """The call's token, checked against the current config; and that config."""
        call.token = token = await auth.authenticate(call.scope, self.token_loads)
        config = self.configs.fresh() or await self.configs.reload()
        auth.check(token, config, now=call.created_at, client_ip=call.client_ip)
        return token, config

    async def hold(self, call: Call, token: TokenSnapshot, plan: Plan, ask: HoldAsk) -> int:
        """Holds what `ask` needs for the call from the account's funds (and a limited token's
        quota), or refuses it, as it does when the records of answers cannot be written.
        Returns the tokens each answer may have for what was held: the allowance's, or fewer
        for a request without max_tokens when the funds are short (fitted to what is left)."""
        if (
            self.recorder.backlog > MAX_PENDING_RECORDS
            or self.recorder.waiting_of.get(token.user_id, 0) > MAX_SET_ASIDE_RECORDS
        ):
            raise errors.busy()
        limited = not token.unlimited_quota
        amount = ask.amount
        try:
            held = await self.book.reserve(
                user_id=token.user_id,
                token_id=token.id,
                limited=limited,
                amount=amount,
                least=ask.least,
            )
        except Refused as refusal:
            raise _hold_refused(refusal, token, ask, call.endpoint) from None
        call.reservation = Reservation(held, limited, plan.price, plan.line)
        return ask.allowance.each if held >= amount else ask.each_covered(held)

    def refused(self, call: Call, error: GatewayError) -> Outcome:
        outcome = Outcome.of_error(error)
        # Our own failures are always logged: their message asks to quote the request id.
        if call.token is not None and error.status < 500:
            outcome.logged = self.refusal_rows.allowed(call.token.id)
        return outcome

    # Life cycle

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        # Nothing is kept from an earlier run in this process: everything is read afresh,
        # under a name of its own.
        self.owner = _process_name()
        self.tokens.drop(everything=True)
        self.db = DatabaseThreads(4, "gateway-db")
        self.token_loads = auth.TokenLoads(self.tokens, self.db)
        self.configs = ConfigCache(lambda: self.db.run(load_config))
        redis = aioredis.from_url(settings.REDIS_URL) if settings.REDIS_URL else None
        self.peers = Peers(self.owner, self.db, redis)
        self.book = HoldBook(self.owner, self.db.run, self.peers.ask)
        self.recorder = Recorder(self.owner)
        self.recorder.start()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
            auto_decompress=True,
        )
        self.router = Router(self.configs, self.db, self.session, self.in_background)
        invalidation.subscribe(self)
        await self.configs.reload()
        self.stopping = asyncio.Event()
        self.flusher = asyncio.create_task(self._flush_loop())
        if settings.REDIS_URL:
            self.tasks.append(asyncio.create_task(invalidation.listen(settings.REDIS_URL, self)))

    async def stop(self) -> None:
        if not self.started:
            return
        # The flush loop ends between two flushes, never inside one.
        self.stopping.set()
        await self.flusher
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        try:
            await self.flush(final=True)
        except Exception:
            log.exception("The last flush failed; the journal keeps it for the next process")
        await self.session.close()
        if self.peers.redis is not None:
            await self.peers.redis.aclose()
            self.peers.redis = None
        self.db.shutdown()
        await self.recorder.stop()
        self.started = False

    def apply(self, change: dict[str, Any]) -> None:
        """An invalidation (a token, a user's grants, or prices and channels changed), or a
        message of the lease protocol between gateway processes (relay.peers)."""
        self.tokens.apply(change)
        if change.get("keys") or change.get("users") or change.get("all"):
            self.token_loads.changed()
        if change.get("users"):
            self.book.funds_changed(change["users"])
        if change.get("config") or change.get("all"):
            self.configs.changed()
        if change.get("give_back") and self.started:
            self.in_background(self.peers.give_back(self.book, change["give_back"]))
        if change.get("given_back"):
            self.peers.given_back(change["given_back"])

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _flush_loop(self) -> None:
        first = True
        while not self.stopping.is_set():
            if not first:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), settings.GATEWAY_FLUSH_SECONDS)
                if self.stopping.is_set():
                    return  # stop() makes the last flush
            try:
                await self.recorder.replay_orphans(force=first)
                first = False
                await self.flush()
                self.tokens.sweep()
            except Exception:
                first = False
                log.exception("Gateway flush failed; retrying with the next one")

    async def flush(self, final: bool = False) -> None:
        settlement = self.book.release_everything() if final else self.book.take_settlement()
        outcome = await self.recorder.flush(settlement, final=final)
        self.book.forget(users=outcome.lost_users, tokens=outcome.lost_tokens)
