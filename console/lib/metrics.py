"""Metrics for Prometheus, served at /metrics (console.asgi) to a scraper that shows the token
or comes from an allowed address (METRICS_TOKEN, METRICS_ALLOW).

What is counted where, so that the gateway's hot path pays nothing for it:

- the gateway's requests by model, channel and status, their latency and time to first token:
  from the requests' records, once a second, in the recorder's flush thread
  (`requests_served`), never per request on the event loop;
- its flushes (records written, how long the database took, how long the oldest record waited)
  and the records not in the database yet: by the recorder, once per flush;
- upstream failures by channel: where a channel is marked failed (relay.routing);
- emails sent and failed by template: where deliveries are marked (accounts.emails);
- the money the gateway holds and the Celery queues' lengths: read afresh at each scrape by the
  process that answers it. A reading that fails (the database or Redis away) is left out, and
  `switchboard_metrics_reading_up` says which; the rest is served all the same.

Several worker processes: PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode)
names a directory of this machine, emptied before the processes start at each deploy. Each
process writes its values there and a scrape, whichever worker answers it, sums them all; a
worker that stops marks itself dead, so that its gauges leave the sums. Without it (make run,
tests) the values live in the process.

Label values are bounded: a model is a priced model's name (relay.recording names any other
"(unknown model)"), at most METRICS_MAX_MODELS of them per process, the rest "(other)"; a
channel is its id; a status its code. No prompt, answer, email address or key is a label.
"""

import asyncio
import gzip
import hmac
import ipaddress
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import prometheus_client
import redis
from django.conf import settings
from django.db import connections
from prometheus_client import REGISTRY, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

PATH = "/metrics"
OTHER_MODELS = "(other)"
NO_MODEL = "(none)"
NO_CHANNEL = "none"
# A scrape waits at most this long for Redis (seconds).
REDIS_TIMEOUT = 0.5
# kombu's Redis transport keeps a queue's prioritised tasks in lists of their own:
# "<queue>\x06\x16<step>" for the steps above 0.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def _multiprocess_directory() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


if _multiprocess_directory():
    # The metrics below open their files there as they are defined.
    os.makedirs(_multiprocess_directory(), exist_ok=True)
# The same series with and without multiprocess mode, which has no "_created" ones.
prometheus_client.disable_created_metrics()

# Answers last from milliseconds (a refusal) to minutes (a long stream).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# A flush's and a fold's rows and time share their buckets.
ROWS_BUCKETS = (1, 10, 100, 1000, 10_000, 100_000)
WRITE_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REQUESTS = prometheus_client.Counter(
    "switchboard_gateway_requests",
    "Requests the gateway answered to a known key, refusals included, by model, channel (its "
    "id; none when no channel was reached) and status code.",
    ["model", "channel", "status"],
)
LATENCY = Histogram(
    "switchboard_gateway_request_duration_seconds",
    "Time from a request's arrival to its answer's end, by model, channel and status class.",
    ["model", "channel", "status_class"],
    buckets=LATENCY_BUCKETS,
)
FIRST_TOKEN = Histogram(
    "switchboard_gateway_time_to_first_token_seconds",
    "Streamed answers: time from the request's arrival to the channel's first byte.",
    ["model", "channel"],
    buckets=FIRST_TOKEN_BUCKETS,
)
UPSTREAM_ERRORS = prometheus_client.Counter(
    "switchboard_gateway_upstream_errors",
    "Failures of a channel on a call, by channel and error: the channel's HTTP status, or "
    "connection (unreachable, timed out or broken off).",
    ["channel", "error"],
)
FLUSH_RECORDS = Histogram(
    "switchboard_gateway_flush_records",
    "Request records per flush that reached the database.",
    buckets=ROWS_BUCKETS,
)
FLUSH_DURATION = Histogram(
    "switchboard_gateway_flush_duration_seconds",
    "How long a flush took to write its records, rollups and money.",
    buckets=WRITE_SECONDS_BUCKETS,
)
FLUSH_LAG = Histogram(
    "switchboard_gateway_flush_lag_seconds",
    "Per flush, how long the oldest record it wrote waited from its answer's end to the commit.",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900),
)
FOLD_ROWS = Histogram(
    "switchboard_gateway_fold_rows",
    "Pending usage rows (a flush's totals per minute and key) per fold into the rollups the "
    "charts read.",
    buckets=ROWS_BUCKETS,
)
FOLD_DURATION = Histogram(
    "switchboard_gateway_fold_duration_seconds",
    "How long a fold of the pending usage into the rollups took.",
    buckets=WRITE_SECONDS_BUCKETS,
)
FLUSH_FAILURES = prometheus_client.Counter(
    "switchboard_gateway_flush_failures",
    "Flushes that could not reach the database (their records wait for the next).",
)
BACKLOG = Gauge(
    "switchboard_gateway_backlog_records",
    "Request records not in the database yet, of running gateway processes: waiting (for "
    "the next flush, or for the database to come back) or set aside (refused by it).",
    ["state"],
    multiprocess_mode="livesum",
)
EMAILS = prometheus_client.Counter(
    "switchboard_emails",
    "Emails by template and outcome: sent, or failed (the mail server refused; retried later).",
    ["template", "outcome"],
)

# Bounds in milliseconds, as the records have them; the last is +Inf.
_LATENCY_MS = [bound * 1000 for bound in LATENCY._upper_bounds]
_FIRST_TOKEN_MS = [bound * 1000 for bound in FIRST_TOKEN._upper_bounds]
_models: set[str] = set()


# Counting, from the gateway's recorder and the mailer.


def requests_served(records: Iterable[Any]) -> None:
    """Counts requests from their records (logs.writer.RequestRecord), each once: in the
    recorder's flush thread, with the records the flush takes."""
    latencies: dict[tuple[str, int | None, int], list[int]] = {}
    first_tokens: dict[tuple[str, int | None], list[int]] = {}
    for record in records:
        key = (record.model, record.channel_id, record.status)
        values = latencies.get(key)
        if values is None:
            values = latencies[key] = []
        values.append(record.latency_ms)
        if record.ttft_ms is not None:
            first_tokens.setdefault(key[:2], []).append(record.ttft_ms)
    for (model, channel_id, status), values in latencies.items():
        labels = _model_label(model), _channel_label(channel_id)
        REQUESTS.labels(*labels, str(status)).inc(len(values))
        _observe_ms(LATENCY.labels(*labels, f"{status // 100}xx"), values, _LATENCY_MS)
    for (model, channel_id), values in first_tokens.items():
        child = FIRST_TOKEN.labels(_model_label(model), _channel_label(channel_id))
        _observe_ms(child, values, _FIRST_TOKEN_MS)


def _observe_ms(child: Histogram, values_ms: list[int], bounds_ms: list[float]) -> None:
    """`child.observe(ms / 1000)` for each value, with one write per bucket rather than two per
    value: at thousands of records a flush, that is time the gateway's event loop would wait
    for the interpreter's lock. It writes prometheus-client's own counters of the histogram
    (`_buckets`, `_sum`), as observe() does; test_metrics.py checks the buckets it fills."""
    buckets: dict[int, int] = {}
    for value in values_ms:
        index = bisect_left(bounds_ms, value)  # the first bound ≥ value, as observe() finds
        buckets[index] = buckets.get(index, 0) + 1
    for index, count in buckets.items():
        child._buckets[index].inc(count)
    child._sum.inc(sum(values_ms) / 1000)


def _model_label(model: str) -> str:
    if model in _models:
        return model or NO_MODEL
    if len(_models) >= settings.METRICS_MAX_MODELS:
        return OTHER_MODELS
    _models.add(model)
    return model or NO_MODEL


def _channel_label(channel_id: int | None) -> str:
    return NO_CHANNEL if channel_id is None else str(channel_id)


def gateway_flushed(parts: Iterable[Any], written: Iterable[int], *, seconds: float) -> None:
    """A flush took `seconds` to write `parts` (logs.writer.Part: an account's records, oldest
    first), those of the accounts `written` for good: in the flush thread, after the commit."""
    records, oldest = 0, None
    accounts = set(written)
    for part in parts:
        if part.records and part.user_id in accounts:
            records += len(part.records)
            first = part.records[0]
            ended = first.created_at.timestamp() + first.latency_ms / 1000
            oldest = ended if oldest is None else min(oldest, ended)
    if oldest is None:
        return
    FLUSH_DURATION.observe(seconds)
    FLUSH_RECORDS.observe(records)
    FLUSH_LAG.observe(max(time.time() - oldest, 0.0))


def usage_folded(rows: int | None, *, seconds: float) -> None:
    """A fold's size and time; `rows` None: another process was folding, nothing done."""
    if rows is None:
        return
    FOLD_ROWS.observe(rows)
    FOLD_DURATION.observe(seconds)


def gateway_flush_failed() -> None:
    FLUSH_FAILURES.inc()


def gateway_backlog(*, waiting: int, set_aside: int) -> None:
    BACKLOG.labels("waiting").set(waiting)
    BACKLOG.labels("set_aside").set(set_aside)


def upstream_failed(channel_id: int | None, reason: str) -> None:
    """A channel failed on a call; `reason` is relay.routing's ("HTTP 503", or the text of a
    connection error, which is not a label)."""
    error = reason[5:8] if reason.startswith("HTTP ") else "connection"
    UPSTREAM_ERRORS.labels(_channel_label(channel_id), error).inc()


def emails_sent(template: str, count: int = 1) -> None:
    EMAILS.labels(template, "sent").inc(count)


def emails_failed(template: str, count: int = 1) -> None:
    EMAILS.labels(template, "failed").inc(count)


# Worker processes, in multiprocess mode.


def process_started() -> None:
    """At a web worker's start: the gauges of this machine's processes that are gone without
    saying so (killed) leave the sums."""
    directory = _multiprocess_directory()
    if not directory:
        return
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _running(int(pid)):
            multiprocess.mark_process_dead(int(pid), directory)


def process_stopped() -> None:
    """At a web worker's stop: its gauges leave the sums (its counts stay)."""
    if _multiprocess_directory():
        multiprocess.mark_process_dead(os.getpid(), _multiprocess_directory())


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


# The endpoint.

# A reading: metric families read afresh at each scrape.
Reading = Callable[[], Iterable[Metric]]


class Endpoint:
    """The ASGI application of /metrics.

    `money_held()` reads what the gateway processes hold: {"balance" or "token_quota": (holds,
    micro-dollars)} (billing.holds.money_held). A scrape runs in a thread of its own, so that
    reading the processes' files, the database and Redis never stops the event loop.
    """

    def __init__(self, *, money_held: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self.readings: dict[str, Reading] = {
            "money_held": lambda: _money_held(money_held),
            "celery_queues": _celery_queues,
        }
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        refused = refusal(scope)
        if refused == 404:
            await _answer(send, 404, b"Not Found\n")
            return
        if refused == 401:
            challenge = (b"www-authenticate", b'Bearer realm="metrics"')
            needed = b"Send the metrics token: Authorization: Bearer <METRICS_TOKEN>.\n"
            await _answer(send, 401, needed, [challenge])
            return
        if scope["method"] not in {"GET", "HEAD"}:
            await _answer(send, 405, b"Method Not Allowed\n", [(b"allow", b"GET, HEAD")])
            return
        headers = dict(scope["headers"])
        accept = headers.get(b"accept", b"").decode("latin-1")
        gzipped = gzip_accepted(headers.get(b"accept-encoding", b"").decode("latin-1"))
        loop = asyncio.get_running_loop()
        body, content_type = await loop.run_in_executor(self.pool, self.exposition, accept, gzipped)
        extra = [(b"content-encoding", b"gzip")] if gzipped else []
        if scope["method"] == "HEAD":
            body = b""
        await _answer(send, 200, body, extra, content_type=content_type.encode())

    def exposition(self, accept: str = "", gzipped: bool = False) -> tuple[bytes, str]:
        """The text a scrape gets, in the format it accepts, and its content type."""
        encoder, content_type = choose_encoder(accept)
        body = encoder(_Scrape(self.readings))
        return gzip.compress(body) if gzipped else body, content_type


class _Scrape:
    """What one scrape collects: every process's values (or this one's), then the readings."""

    def __init__(self, readings: dict[str, Reading]) -> None:
        self.readings = readings

    def collect(self) -> Iterable[Metric]:
        directory = _multiprocess_directory()
        if directory:
            yield from multiprocess.MultiProcessCollector(None, path=directory).collect()
        else:
            yield from REGISTRY.collect()
        up = GaugeMetricFamily(
            "switchboard_metrics_reading_up",
            "1 if this scrape could read it (the database for money_held, Redis for "
            "celery_queues), 0 if not: its metrics are missing from this scrape.",
            labels=["reading"],
        )
        for name, read in self.readings.items():
            try:
                families = list(read())
            except Exception as error:
                log.warning("Metrics: could not read %s: %s", name, error)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from families
        yield up


def _money_held(read: Callable[[], dict[str, tuple[int, int]]]) -> list[Metric]:
    try:
        held = read()
    finally:
        connections.close_all()  # this thread's own: a scrape keeps no connection open
    money = GaugeMetricFamily(
        "switchboard_money_held_dollars",
        "Money the gateway processes hold now, on balances and on limited tokens' quotas.",
        labels=["on"],
    )
    holds = GaugeMetricFamily(
        "switchboard_holds", "Holds of the gateway processes now.", labels=["on"]
    )
    for on, (count, amount) in sorted(held.items()):
        money.add_metric([on], amount / 1_000_000)
        holds.add_metric([on], count)
    return [money, holds]


_redis_clients: dict[str, redis.Redis] = {}


def _celery_queues() -> list[Metric]:
    """Tasks waiting in each queue, read from the broker (Redis); nothing without one (tasks
    then run at once, in the process)."""
    if not settings.REDIS_URL:
        return []
    client = _redis_clients.get(settings.REDIS_URL)
    if client is None:
        client = _redis_clients[settings.REDIS_URL] = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
    names = _queue_names()
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            for step in PRIORITY_STEPS:
                pipe.llen(f"{prefix}{name}{PRIORITY_SEPARATOR}{step}" if step else prefix + name)
        lengths = pipe.execute()
    family = GaugeMetricFamily(
        "switchboard_celery_queue_length",
        "Celery tasks waiting in each queue (tasks being run are not counted).",
        labels=["queue"],
    )
    steps = len(PRIORITY_STEPS)
    for index, name in enumerate(names):
        family.add_metric([name], sum(lengths[index * steps : (index + 1) * steps]))
    return [family]


def _queue_names() -> list[str]:
    """The default queue, the queues of CELERY_TASK_ROUTES, and METRICS_CELERY_QUEUES."""
    names = [getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")]
    routes = getattr(settings, "CELERY_TASK_ROUTES", None)
    if isinstance(routes, dict):
        names += [route["queue"] for route in routes.values() if isinstance(route, dict)]
    names += settings.METRICS_CELERY_QUEUES
    return sorted(set(names))


# Who may read it.


def refusal(scope: dict) -> int | None:
    """None if the scraper may read the metrics; else the status it gets: 404 when the metrics
    are not exposed (neither a token nor an allowlist set) or not to its address, 401 when it
    lacks the token."""
    token, allowed = settings.METRICS_TOKEN, settings.METRICS_ALLOW
    if not token and not allowed:
        return 404
    if allowed and not _address_allowed(scope.get("client"), allowed):
        return 404
    if token and not _token_given(scope, token):
        return 401
    return None


def _address_allowed(client: tuple[str, int] | None, allowed: list[str]) -> bool:
    if not client:
        return False
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:  # a Unix socket's peer, or no address at all
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in allowed)


def _token_given(scope: dict, token: str) -> bool:
    given = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, given = value.partition(b" ")
            if scheme.lower() != b"bearer":
                given = b""
            break
    # In constant time: how much of the token a guess got right is not told by the clock.
    return hmac.compare_digest(given.strip(), token.encode())


async def _answer(
    send: Callable,
    status: int,
    body: bytes,
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
