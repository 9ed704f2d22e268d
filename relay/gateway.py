"""The /v1 gateway: a plain ASGI application on the hot path of every customer request.

It runs past Django's request cycle (console.asgi sends /v1/ here) but uses the project's
models and settings. Per request it does no database I/O in the common case: the token comes
from an in-process cache, prices and channels from an in-memory snapshot, money from a lease
(billing.holds), and the log row goes to a batch written once a second (logs.writer). Request
and response bodies pass through memory only: they are never stored or logged.
"""

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import os
import secrets
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import aiohttp
import redis.asyncio as aioredis
from django.conf import settings

from billing.holds import HoldBook, Refused, hold_give_back
from console.lib import invalidation
from logs.ids import uuid7
from logs.writer import RequestRecord
from relay import adapters, errors, metering
from relay.config import load_config
from relay.recorder import Recorder, in_db
from tokens import keys
from tokens.cache import TokenCache, load_snapshot

log = logging.getLogger(__name__)

ENDPOINTS = {
    "/v1/chat/completions": ("chat/completions", "chat"),
    "/v1/completions": ("completions", "completion"),
    "/v1/embeddings": ("embeddings", "embedding"),
}
REQUIRED_FIELD = {"chat/completions": "messages", "completions": "prompt", "embeddings": "input"}
RETRYABLE = {408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529}
CONFIG_MAX_AGE = 30.0
# Records not yet in the database beyond which new requests are turned away until it catches
# up: all requests when it is away, one account's when it refuses that account's usage.
MAX_PENDING_RECORDS = 200_000
MAX_SET_ASIDE_RECORDS = 20_000
# How long a process short of money waits for the others to give some back.
GIVE_BACK_WAIT = 0.5
MAX_ANSWERS = 128  # n and best_of, as OpenAI bounds them
JSON = b"application/json"
ZERO = Decimal(0)
NO_USAGE = (0, 0, False)
# What a log row says for a model name we do not price: the name itself is the client's text.
UNKNOWN_MODEL = "(unknown model)"


class GiveBackAsk:
    """This process asked others to give back money; these have not answered yet."""

    def __init__(self, owners):
        self.waiting = set(owners)
        self.answered = asyncio.Event()


@dataclass(slots=True)
class Call:
    """What the gateway knows about the request at hand, for its answer and its log row."""

    id: object
    created_at: datetime
    started: float
    client_ip: str | None = None
    token: object = None
    endpoint: str = ""
    model: str = ""
    stream: bool = False
    group_id: int | None = None
    channel_id: int | None = None
    retries: int = 0
    status: int = 0
    error_code: str = ""
    ttft: int | None = None
    # Money: the price and line it is charged at, and what was reserved for it.
    price: object = None
    line: object = None
    reserved: int = 0
    limited: bool = False
    billed: bool = False


class Gateway:
    def __init__(self):
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.tokens = TokenCache(in_this_process=False)  # fed by self.apply
        self.book = HoldBook(self.owner, self.run_db)
        self.recorder = Recorder(self.owner)
        self.config = None
        self.config_version = 0  # bumped by every change of prices, lines or channels
        self.loaded_version = -1
        self.config_lock = None
        self.failures = {}
        self.session = None
        self.db = None
        self.redis = None
        self.asks = {}  # (user id, token id) → GiveBackAsk: this process asked others for money
        self.refusals_minute, self.refusals_logged = 0, Counter()  # token id → rows this minute
        self.started = False
        self.stopping = None
        self.flusher = None  # the task that flushes once a second
        self.tasks = []
        self.background = set()  # fire-and-forget work, kept until done
        self.trusted = []

    # Life cycle

    async def start(self):
        if self.started:
            return
        self.started = True
        # Nothing is kept from an earlier run in this process: read everything afresh, under
        # a name of its own.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.config, self.loaded_version = None, -1
        self.tokens.drop(everything=True)
        self.failures.clear()
        self.asks.clear()
        self.book = HoldBook(self.owner, self.run_db, self.ask_others)
        self.recorder = Recorder(self.owner)
        self.recorder.start()
        self.config_lock = asyncio.Lock()
        self.db = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gateway-db")
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in settings.TRUSTED_PROXIES]
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
            auto_decompress=True,
        )
        invalidation.subscribe(self)
        await self.current_config()
        self.stopping = asyncio.Event()
        self.flusher = asyncio.create_task(self._flush_loop())
        if settings.REDIS_URL:
            self.redis = aioredis.from_url(settings.REDIS_URL)
            self.tasks.append(asyncio.create_task(invalidation.listen(settings.REDIS_URL, self)))

    async def stop(self):
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
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        self.db.shutdown(wait=True)
        await self.recorder.stop()
        self.started = False

    def apply(self, change):
        """An invalidation (a token, a user's grants, or prices and channels changed), or a
        message of the lease protocol between gateway processes."""
        self.tokens.apply(change)
        if change.get("users"):
            self.book.funds_changed(change["users"])
        if change.get("config") or change.get("all"):
            self.config_version += 1
        if change.get("give_back") and self.started:
            self._in_background(self._give_back(change["give_back"]))
        if change.get("given_back"):
            self._given_back(change["given_back"])

    def _in_background(self, coroutine):
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def run_db(self, function, **kwargs):
        """Runs a database function in one of the gateway's database threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.db, functools.partial(in_db, function, kwargs))

    def _config_is_fresh(self):
        config = self.config
        return (
            config is not None
            and self.loaded_version == self.config_version
            and time.monotonic() - config.loaded_at < CONFIG_MAX_AGE
        )

    async def current_config(self):
        """The price and channel snapshot, reloaded when staff changed something."""
        if self._config_is_fresh():
            return self.config
        async with self.config_lock:
            if not self._config_is_fresh():  # nobody reloaded it while we waited
                version = self.config_version  # changes from now on call for another reload
                try:
                    self.config = await self.run_db(load_config)
                    self.loaded_version = version
                except Exception:
                    if self.config is None:
                        raise
                    log.exception("Could not reload the gateway config; keeping the last one")
        return self.config

    async def _flush_loop(self):
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

    async def flush(self, final=False):
        settlement = self.book.release_everything() if final else self.book.take_settlement()
        outcome = await self.recorder.flush(settlement, final=final)
        self.book.forget(users=outcome.lost_users, tokens=outcome.lost_tokens)

    # The lease protocol: a process short of money asks the others to give back what they
    # hold of the same account and do not use, then tries once more.

    async def ask_others(self, user_id, token_id, owners):
        if self.redis is None:
            return
        ask = GiveBackAsk(owners)
        self.asks[(user_id, token_id)] = ask
        try:
            await self._publish(
                give_back={
                    "user": user_id,
                    "token": token_id,
                    "by": self.owner,
                    "asked": sorted(owners),
                }
            )
            await asyncio.wait_for(ask.answered.wait(), GIVE_BACK_WAIT)
        except TimeoutError:
            pass
        finally:
            self.asks.pop((user_id, token_id), None)

    async def _give_back(self, request):
        if self.owner not in request.get("asked", ()):
            return
        user_id, token_id = request["user"], request.get("token")
        amount = self.book.give_back(user_id, token_id)
        if amount:
            try:
                await self.run_db(
                    hold_give_back,
                    owner=self.owner,
                    user_id=user_id,
                    token_id=token_id,
                    amount=amount,
                )
            except Exception:
                log.exception("Could not give back held money of user %s", user_id)
                self.book.undo_give_back(user_id, token_id, amount)
        await self._publish(
            given_back={"user": user_id, "token": token_id, "to": request["by"], "by": self.owner}
        )

    def _given_back(self, answer):
        if answer.get("to") != self.owner:
            return
        ask = self.asks.get((answer["user"], answer.get("token")))
        if ask is not None:
            ask.waiting.discard(answer.get("by"))
            if not ask.waiting:
                ask.answered.set()

    async def _publish(self, **message):
        try:
            await self.redis.publish(invalidation.channel(), json.dumps(message))
        except Exception:
            log.warning("Could not reach the other gateway processes", exc_info=True)

    # Requests

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        if not self.started:
            await self.start()
        call = Call(id=uuid7(), created_at=datetime.now(UTC), started=time.perf_counter())
        call.client_ip = self.client_ip(scope)
        try:
            await self.handle(call, scope, receive, send)
        except errors.GatewayError as error:
            await self.answer_error(call, send, error)
        except Exception:
            log.exception("Gateway error on request %s", call.id)
            await self.answer_error(
                call,
                send,
                errors.GatewayError(
                    500,
                    "internal_error",
                    f"Something went wrong on our side. Retry; if it persists, quote request id "
                    f"{call.id} to support.",
                    type="server_error",
                    retry=True,
                ),
                log_row=not call.billed,  # a billed request has its row already
            )

    async def handle(self, call, scope, receive, send):
        path = scope["path"].rstrip("/")
        method = scope["method"]
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                raise errors.method_not_allowed(method, path)
            call.endpoint = "models"
            token = await self.authenticate(call, scope)
            config = await self.current_config()
            self.check_token(call, token, config)
            return await self.list_models(call, send, token, config, path)
        if path not in ENDPOINTS:
            raise errors.unknown_path(method, scope["path"])
        if method != "POST":
            raise errors.method_not_allowed(method, path)
        upstream_path, call.endpoint = ENDPOINTS[path]
        token = await self.authenticate(call, scope)
        config = await self.current_config()
        self.check_token(call, token, config)
        payload = parse_payload(await read_body(scope, receive), upstream_path)
        call.model = payload["model"]
        call.stream = payload.get("stream") is True and upstream_path != "embeddings"
        call.price = config.prices.get(call.model)
        if call.price is None:
            raise errors.unknown_model(call.model)
        if token.allowed_models and call.model not in token.allowed_models:
            raise errors.model_not_allowed(token.name, call.model)
        call.line = config.lines[token.group_id]
        candidates = config.candidates(token.group_id, call.model)
        if not candidates:
            if (token.group_id, call.model) in config.served:
                raise errors.no_channel(call.model, token.group_name)
            raise errors.model_not_on_line(call.model, token.group_name)
        # Answers must be recorded: with too much not written yet (the database is away, or
        # refuses this account's usage), requests wait until it is.
        if (
            self.recorder.backlog > MAX_PENDING_RECORDS
            or self.recorder.waiting_of.get(token.user_id, 0) > MAX_SET_ASIDE_RECORDS
        ):
            raise errors.busy()

        prompt_estimate = metering.estimate_prompt_tokens(payload, upstream_path)
        allowance = metering.completion_allowance(payload, upstream_path)
        call.reserved = metering.hold_amount(call.price, call.line, prompt_estimate, allowance)
        call.limited = not token.unlimited_quota
        try:
            await self.book.reserve(
                user_id=token.user_id,
                token_id=token.id,
                limited=call.limited,
                amount=call.reserved,
            )
        except Refused as refusal:
            if refusal.code == "token_quota_exceeded":
                raise errors.token_quota_exceeded(token.name) from None
            raise errors.insufficient_balance() from None
        try:
            await self.forward(call, send, payload, upstream_path, candidates, receive)
        finally:
            if not call.billed:  # no answer went out: what was reserved is free again
                self.book.finish(
                    user_id=token.user_id,
                    token_id=token.id,
                    limited=call.limited,
                    reserved=call.reserved,
                    cost=0,
                )

    def bill(self, call, usage=None):
        """Charges an answer from the leases and records it (in the journal too), before its
        last byte goes out. `usage` is (prompt tokens, completion tokens, estimated), or None
        for a request that failed: it is recorded and costs nothing."""
        prompt_tokens, completion_tokens, _estimated = usage or NO_USAGE
        breakdown = metering.price(call.price, call.line, prompt_tokens, completion_tokens)
        token = call.token
        charged = self.book.finish(
            user_id=token.user_id,
            token_id=token.id,
            limited=call.limited,
            reserved=call.reserved,
            cost=breakdown.cost if usage is not None else 0,
        )
        call.billed = True
        self.record(call, usage or NO_USAGE, charged, breakdown)

    async def authenticate(self, call, scope):
        key = _api_key(scope)
        if not key:
            raise errors.missing_key()
        if not keys.looks_valid(key):
            raise errors.invalid_key()
        key_hash = keys.hash_key(key)
        known, token = self.tokens.get(key_hash)
        if not known:
            token = await self.run_db(
                load_snapshot, key_hash=key_hash, previous_hashes=keys.previous_hashes(key)
            )
            self.tokens.put(key_hash, token)
        if token is None:
            raise errors.invalid_key()
        call.token = token
        call.group_id = token.group_id
        return token

    def check_token(self, call, token, config):
        if not token.enabled:
            raise errors.token_disabled(token.name)
        if token.expires_at is not None and token.expires_at <= call.created_at:
            raise errors.token_expired(token.name)
        if token.networks:
            try:
                address = ipaddress.ip_address(call.client_ip)
            except ValueError:
                address = None
            if address is None or not any(address in network for network in token.networks):
                raise errors.ip_not_allowed(token.name, call.client_ip)
        if not (token.group_granted and token.group_active) or token.group_id not in config.lines:
            raise errors.group_not_granted(token.name, token.group_name)

    async def list_models(self, call, send, token, config, path):
        names = config.models_on_line(token.group_id)
        if token.allowed_models:
            names = [name for name in names if name in token.allowed_models]
        entries = [
            {
                "id": name,
                "object": "model",
                "created": config.prices[name].created,
                "owned_by": config.prices[name].vendor,
            }
            for name in names
        ]
        if path.startswith("/v1/models/"):
            wanted = path.removeprefix("/v1/models/")
            found = next((entry for entry in entries if entry["id"] == wanted), None)
            if found is None:
                raise errors.unknown_model(wanted)
            body = json.dumps(found).encode()
        else:
            body = json.dumps({"object": "list", "data": entries}).encode()
        call.status = 200
        self.record(call)
        await respond(send, 200, body, call.id)

    async def forward(self, call, send, payload, upstream_path, candidates, receive):
        """Tries channels until one answers, and passes the answer on, billed."""
        tries = 0
        for upstream in candidates[: settings.GATEWAY_MAX_TRIES]:
            tries += 1
            call.retries = tries - 1
            call.channel_id = upstream.id
            mapped, body = _for_upstream(payload, upstream, call.stream)
            try:
                reply = await adapters.call(
                    self.session, upstream, upstream_path, mapped, body, stream=call.stream
                )
            except adapters.UpstreamError as error:
                self.channel_failed(upstream, str(error))
                continue
            if reply.status in RETRYABLE:
                reply.close()
                self.channel_failed(upstream, f"HTTP {reply.status}")
                continue
            if reply.status in {401, 403}:
                reply.close()
                self.channel_failed(
                    upstream, f"HTTP {reply.status}: the channel's key was refused", disable=True
                )
                continue
            self.failures.pop(upstream.id, None)
            if call.stream and reply.status == 200:
                return await self.stream(call, send, payload, upstream_path, reply, receive)
            try:
                content = await reply.body()
            except adapters.UpstreamError as error:
                self.channel_failed(upstream, str(error))
                continue
            return await self.pass_through(
                call, send, payload, upstream_path, reply.status, content
            )
        error = errors.upstream_failed(tries)
        call.status, call.error_code = error.status, error.code
        self.bill(call)
        await self.answer_error(call, send, error, log_row=False)

    async def pass_through(self, call, send, payload, upstream_path, status, content):
        call.status = status
        call.error_code = ""
        if status != 200:
            # The request's own fault (a 4xx from upstream): returned as is, nothing charged.
            call.error_code = "upstream_rejected"
            if not _looks_like_json(content):
                content = errors.bad_field(
                    None, "The upstream provider refused the request."
                ).body()
            self.bill(call)
            # Not one of the statuses retried on another channel: as is, it fails again.
            await respond(send, status, content, call.id, [(b"x-should-retry", b"false")])
            return
        try:
            usage = json.loads(content).get("usage")
        except (ValueError, AttributeError):
            usage = None
        counts = metering.reported_usage(usage, embeddings=upstream_path == "embeddings")
        if counts is not None:
            self.bill(call, (*counts, False))
        else:
            prompt_tokens = metering.estimate_prompt_tokens(payload, upstream_path)
            completion_tokens = metering.estimate_completion_tokens(_answer_text(content))
            self.bill(call, (prompt_tokens, completion_tokens, True))
        await respond(send, 200, content, call.id)

    async def stream(self, call, send, payload, upstream_path, reply, receive):
        """Passes an SSE stream on as it comes. Never retried once the first byte went out.
        The closing `data: [DONE]` waits until the answer is billed and in the journal."""
        wants_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        call.status = 200
        call.error_code = ""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-request-id", str(call.id).encode()),
                ],
            }
        )
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        usage = None
        content_chunks = 0
        first_byte = None
        tail = []  # from `data: [DONE]` on
        try:
            async for line in reply.lines():
                if disconnected.done():
                    call.error_code = "client_disconnected"
                    reply.close()
                    break
                if tail or line.startswith(b"data: [DONE]"):
                    tail.append(line)
                    continue
                if line.startswith(b"data:"):
                    data = line[5:].strip()
                    if b'"usage"' in data and not _usage_is_null(data):
                        chunk = _json_or_none(data)
                        if chunk and chunk.get("usage"):
                            usage = chunk["usage"]
                            if not wants_usage and not chunk.get("choices"):
                                continue  # asked for by us, not by the client
                    if b'"content"' in data and b'"content":""' not in data:
                        content_chunks += 1
                if first_byte is None:
                    first_byte = time.perf_counter()
                await send({"type": "http.response.body", "body": line, "more_body": True})
        except adapters.UpstreamError as error:
            call.error_code = "stream_broken"
            self.channel_failed_quietly(call.channel_id, str(error))
            message = {
                "error": {
                    "message": "The upstream stream broke off. Retry the request.",
                    "type": "server_error",
                    "code": "stream_broken",
                }
            }
            tail = [b"data: " + json.dumps(message).encode() + b"\n\n"]
        finally:
            disconnected.cancel()
        call.ttft = int((first_byte - call.started) * 1000) if first_byte else None
        counts = metering.reported_usage(usage)
        if counts is not None:
            self.bill(call, (*counts, False))
        else:
            prompt_tokens = metering.estimate_prompt_tokens(payload, upstream_path)
            self.bill(call, (prompt_tokens, content_chunks, True))
        await send({"type": "http.response.body", "body": b"".join(tail), "more_body": False})

    def channel_failed(self, upstream, reason, disable=False):
        count = self.failures.get(upstream.id, 0) + 1
        self.failures[upstream.id] = count
        if disable or count >= settings.CHANNEL_FAILURE_THRESHOLD:
            self.failures.pop(upstream.id, None)
            if self.config is not None:
                self.config = self.config.without(upstream.id)
            why = reason if disable else f"{count} failures in a row; last: {reason}"
            task = asyncio.ensure_future(
                self.run_db(channel_disable, channel_id=upstream.id, reason=why)
            )
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        self.channel_failed_quietly(upstream.id, reason)

    def channel_failed_quietly(self, channel_id, reason):
        log.warning("Channel %s failed: %s", channel_id, reason)

    # Answers

    def record(self, call, usage=NO_USAGE, cost=0, breakdown=None, logged=True):
        if not logged and cost:
            # A record without a row is counted again by a journal replay: it must cost nothing.
            raise ValueError("A charged request always gets its log row.")
        token = call.token
        prompt_tokens, completion_tokens, estimated = usage
        # A name we do not price is whatever the client sent: it is not kept.
        model = call.model if call.price is not None or not call.model else UNKNOWN_MODEL
        self.recorder.add(
            RequestRecord(
                id=call.id,
                created_at=call.created_at,
                user_id=token.user_id,
                token_id=token.id,
                group_id=call.group_id,
                channel_id=call.channel_id,
                endpoint=call.endpoint,
                # Any string parses as a model name (lone surrogates, NUL): a log row must
                # hold only what every database can store.
                model=model[:100].encode("utf-8", "replace").decode().replace("\x00", ""),
                stream=call.stream,
                client_ip=call.client_ip,
                status=call.status,
                error_code=call.error_code,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                usage_estimated=estimated,
                cost=cost,
                model_multiplier=breakdown.model_multiplier if breakdown else ZERO,
                completion_multiplier=breakdown.completion_multiplier if breakdown else ZERO,
                group_multiplier=breakdown.group_multiplier if breakdown else ZERO,
                call_price=breakdown.call_price if breakdown else 0,
                per_call=breakdown.per_call if breakdown else False,
                latency_ms=int((time.perf_counter() - call.started) * 1000),
                ttft_ms=call.ttft,
                retries=call.retries,
                quota_hold=call.limited and cost > 0,
                logged=logged,
            )
        )

    async def answer_error(self, call, send, error, log_row=True):
        if log_row and call.token is not None:
            call.status, call.error_code = error.status, error.code
            # Our own failures are always logged: their message asks to quote the request id.
            logged = error.status >= 500 or self.refusal_gets_a_row(call.token.id)
            self.record(call, logged=logged)
        headers = [(b"x-should-retry", b"true" if error.retry else b"false")]
        await respond(send, error.status, error.body(), call.id, headers)

    def refusal_gets_a_row(self, token_id):
        """A token's refused requests get log rows up to GATEWAY_REFUSALS_LOGGED_PER_MINUTE a
        minute (per process); the rest are only counted, in the rollups."""
        minute = int(time.time()) // 60
        if minute != self.refusals_minute:
            self.refusals_minute, self.refusals_logged = minute, Counter()
        self.refusals_logged[token_id] += 1
        return self.refusals_logged[token_id] <= settings.GATEWAY_REFUSALS_LOGGED_PER_MINUTE

    def client_ip(self, scope):
        client = scope.get("client")
        peer = client[0] if client else None
        if not self.trusted or peer is None:
            return peer
        try:
            if not any(ipaddress.ip_address(peer) in net for net in self.trusted):
                return peer
        except ValueError:
            return peer
        forwarded = _header(scope, b"x-forwarded-for")
        if not forwarded:
            return peer
        # The rightmost address that is not one of our proxies is the client.
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            try:
                address = ipaddress.ip_address(hop)
            except ValueError:
                return peer
            if not any(address in net for net in self.trusted):
                return str(address)
        return peer


# Helpers


def channel_disable(*, channel_id, reason):
    from relay.models import Channel

    Channel.objects.get(pk=channel_id).disable(reason)
    Channel.objects.filter(pk=channel_id).update(
        last_error=reason[:500], last_error_at=datetime.now(UTC)
    )
    invalidation.publish(config=True)


def _header(scope, name):
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _api_key(scope):
    authorization = _header(scope, b"authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
        return authorization.strip()
    key = _header(scope, b"x-api-key")
    return key.strip() if key else None


async def read_body(scope, receive):
    limit = settings.GATEWAY_MAX_BODY_BYTES
    declared = _header(scope, b"content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise errors.body_too_large(limit)
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise errors.GatewayError(400, "client_disconnected", "The client went away.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise errors.body_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


class _NotJSON(ValueError):
    pass


def _no_constants(name):
    raise _NotJSON(f"{name} is not a JSON value")


def _is_message(message):
    """{role, content}: content a string, a list of parts ({type, …}), or null."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        return False
    content = message.get("content")
    if content is None or isinstance(content, str):
        return True
    return isinstance(content, list) and all(isinstance(part, dict) for part in content)


def _is_text_or_tokens(value):
    """A prompt or an input: a string, or a list of strings, of token ids or of token lists."""
    if isinstance(value, str):
        return True
    if not isinstance(value, list):
        return False

    def tokens(items):
        return all(isinstance(t, int) and not isinstance(t, bool) for t in items)

    return (
        all(isinstance(item, str) for item in value)
        or tokens(value)
        or all(isinstance(item, list) and tokens(item) for item in value)
    )


def parse_payload(body, upstream_path):
    if not body.strip():
        raise errors.bad_json("the body is empty")
    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise errors.bad_json("it is not UTF-8") from None
    except RecursionError:
        raise errors.bad_json("it is nested too deeply") from None
    except _NotJSON as error:
        raise errors.bad_json(str(error)) from None
    except ValueError as error:
        raise errors.bad_json(
            f"line {getattr(error, 'lineno', '?')}, column {getattr(error, 'colno', '?')}"
        ) from None
    if not isinstance(payload, dict):
        raise errors.bad_json("it must be an object, {…}")
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise errors.bad_field(
            "model",
            "'model' is required: the name of a model, such as "
            '"gpt-4o-mini". GET /v1/models lists them.',
        )
    required = REQUIRED_FIELD[upstream_path]
    value = payload.get(required)
    if value is None or value == "" or value == []:
        raise errors.bad_field(required, f"'{required}' is required for {upstream_path}.")
    if upstream_path == "chat/completions" and not isinstance(value, list):
        raise errors.bad_field("messages", "'messages' must be a list of {role, content} objects.")
    # null means the default (no stream), as for OpenAI.
    if payload.get("stream") is not None and not isinstance(payload["stream"], bool):
        raise errors.bad_field("stream", "'stream' must be true or false.")
    # Read on streams (whether the client wants the usage chunk), and amended for upstreams.
    options = payload.get("stream_options")
    if options is not None and (
        not isinstance(options, dict)
        or not isinstance(options.get("include_usage", False), bool | None)
    ):
        raise errors.bad_field(
            "stream_options",
            "'stream_options' must be an object such as {\"include_usage\": true}, or null.",
        )
    for field in ("max_tokens", "max_completion_tokens"):
        value = payload.get(field)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise errors.bad_field(field, f"'{field}' must be a positive whole number.")
    # Each answer asked for is held and billed: only whole numbers, within OpenAI's bound.
    for field in ("n", "best_of"):
        value = payload.get(field)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ANSWERS
        ):
            raise errors.bad_field(
                field, f"'{field}' must be a whole number from 1 to {MAX_ANSWERS}."
            )
    if upstream_path == "chat/completions":
        if not all(_is_message(message) for message in payload["messages"]):
            raise errors.bad_field(
                "messages",
                "Each of 'messages' must be an object with a 'role' string and a 'content' "
                "string, list of parts or null.",
            )
    elif not _is_text_or_tokens(payload[required]):
        raise errors.bad_field(
            required,
            f"'{required}' must be a string, a list of strings, a list of token ids or a list "
            "of lists of token ids.",
        )
    return payload


def _for_upstream(payload, upstream, stream):
    """The payload for one channel: its model name, and usage asked for on streams."""
    mapped = payload
    upstream_model = upstream.upstream_model(payload["model"])
    if upstream_model != payload["model"]:
        mapped = {**mapped, "model": upstream_model}
    if stream and not (payload.get("stream_options") or {}).get("include_usage"):
        mapped = {
            **mapped,
            "stream_options": {**(payload.get("stream_options") or {}), "include_usage": True},
        }
    return mapped, json.dumps(mapped).encode()


async def respond(send, status, body, request_id, extra_headers=()):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", JSON),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", str(request_id).encode()),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _wait_disconnect(receive):
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _usage_is_null(data):
    return b'"usage":null' in data or b'"usage": null' in data


def _json_or_none(data):
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _looks_like_json(content):
    return _json_or_none(content) is not None


def _answer_text(content):
    answer = _json_or_none(content) or {}
    texts = []
    for choice in answer.get("choices") or []:
        if isinstance(choice, dict):
            message = choice.get("message") or {}
            texts.append(str(message.get("content") or choice.get("text") or ""))
    return "".join(texts)
