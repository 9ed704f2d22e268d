"""/metrics, for Prometheus: only to a scraper with the token or from an allowed address; the
money the gateway holds and the Celery queues read at each scrape, the rest served when one
cannot be read; model names bounded; several worker processes summed in multiprocess mode."""

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from accounts import emails
from billing import services
from billing.holds import hold_acquire
from billing.models import LedgerEntry
from console.lib import metrics
from tests.conftest import free_port
from tests.console.metrics_process import record
from tests.smtp_sink import SmtpSink
from tokens.services import token_create

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "a-long-random-metrics-token-of-this-test"


def scrape(*, headers=None, client=("127.0.0.1", 40000), method="GET"):
    """The site's ASGI application asked for /metrics, as by a scraper at `client`."""
    from console.asgi import application

    async def ask():
        transport = httpx.ASGITransport(app=application, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.5") as http:
            return await http.request(method, "/metrics", headers=headers or {})

    return asyncio.run(ask())


def with_token(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def samples(text):
    """{(sample name, frozenset of its labels): value} of an exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found, name, **labels):
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def token_set(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOW = []


# Who may read them.


def test_they_are_not_there_unless_a_token_or_an_allowlist_is_set(settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOW = []
    assert scrape().status_code == 404
    assert scrape(headers=with_token("")).status_code == 404


def test_they_ask_for_the_token(token_set):
    missing = scrape()
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert "switchboard" not in missing.text
    for wrong in ["nope", TOKEN[:-1], TOKEN + "x", TOKEN.upper()]:
        assert scrape(headers=with_token(wrong)).status_code == 401, wrong
    assert scrape(headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


def test_they_are_served_with_the_token(token_set):
    response = scrape(headers=with_token())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.headers["cache-control"] == "no-store"
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "switchboard_gateway_requests",
        "switchboard_gateway_request_duration_seconds",
        "switchboard_gateway_flush_lag_seconds",
        "switchboard_gateway_backlog_records",
        "switchboard_gateway_upstream_errors",
        "switchboard_emails",
        "switchboard_metrics_reading_up",
    } <= names


def test_they_are_served_only_to_allowed_addresses(settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOW = ["10.0.0.0/8", "2001:db8::1"]
    assert scrape(client=("127.0.0.1", 40000)).status_code == 404
    assert scrape(client=("192.0.2.10", 40000)).status_code == 404
    assert scrape(client=("10.1.2.3", 40000)).status_code == 200
    assert scrape(client=("::ffff:10.1.2.3", 40000)).status_code == 200
    assert scrape(client=("2001:db8::1", 40000)).status_code == 200
    assert scrape(client=("2001:db8::2", 40000)).status_code == 404


def test_with_both_set_they_need_the_address_and_the_token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOW = ["10.0.0.0/8"]
    assert scrape(client=("10.1.2.3", 40000)).status_code == 401
    assert scrape(client=("192.0.2.10", 40000), headers=with_token()).status_code == 404
    assert scrape(client=("10.1.2.3", 40000), headers=with_token()).status_code == 200


def test_they_are_read_only(token_set):
    assert scrape(headers=with_token(), method="POST").status_code == 405
    head = scrape(headers=with_token(), method="HEAD")
    assert head.status_code == 200 and head.content == b""


def metrics_settings(**environment):
    """(METRICS_TOKEN, METRICS_ALLOW) as console.settings makes them from `environment`, or
    the error it stops with."""
    code = "from django.conf import settings; print(settings.METRICS_TOKEN, settings.METRICS_ALLOW)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METRICS_", "DJANGO_"))}
    env.update(DJANGO_SETTINGS_MODULE="console.settings", SECRET_KEY="s" * 50, **environment)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def test_nothing_exposes_them_by_default_but_development_on_this_machine():
    assert metrics_settings(DEBUG="0") == "[]"
    assert metrics_settings(DEBUG="1") == "['127.0.0.1', '::1']"
    assert metrics_settings(DEBUG="0", METRICS_ALLOW="10.0.0.0/8, 127.0.0.1") == (
        "['10.0.0.0/8', '127.0.0.1']"
    )
    refused = metrics_settings(DEBUG="0", METRICS_ALLOW="10.0.0.0/8,intranet")
    assert refused.startswith("django.core.exceptions.ImproperlyConfigured: METRICS_ALLOW:")
    assert "'intranet' is not an address or a network" in refused


# What they show.


def test_they_show_the_money_the_gateway_holds(transactional_db, token_set, alice, default_line):
    services.balance_credit(user=alice, amount=10_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    token, _key = token_create(
        user=alice,
        name="limited",
        line=default_line,
        unlimited_quota=False,
        quota_limit=2_000_000,
        notify=False,
    )
    on_balance = [
        hold_acquire(owner=owner, user_id=alice.pk, token_id=None, minimum=250_000).granted
        for owner in ("worker-1", "worker-2")
    ]
    on_quota = hold_acquire(owner="worker-1", user_id=alice.pk, token_id=token.pk, minimum=1000)
    found = samples(scrape(headers=with_token()).text)
    assert value(found, "switchboard_holds", on="balance") == 2
    assert value(found, "switchboard_money_held_dollars", on="balance") == sum(on_balance) / 1e6
    assert value(found, "switchboard_holds", on="token_quota") == 1
    held_on_quota = value(found, "switchboard_money_held_dollars", on="token_quota")
    assert held_on_quota == on_quota.granted / 1e6 > 0
    assert value(found, "switchboard_metrics_reading_up", reading="money_held") == 1


def test_a_reading_that_fails_leaves_the_rest_served(token_set, settings, transactional_db):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    response = scrape(headers=with_token())
    assert response.status_code == 200
    found = samples(response.text)
    assert value(found, "switchboard_metrics_reading_up", reading="celery_queues") == 0
    assert value(found, "switchboard_metrics_reading_up", reading="money_held") == 1
    assert ("switchboard_money_held_dollars", frozenset({("on", "balance")})) in found


@pytest.mark.redis
@pytest.mark.filterwarnings("ignore:task_always_eager has no effect on send_task")
def test_they_show_the_tasks_waiting_in_each_celery_queue(token_set, settings):
    import redis

    from console.celery import app as celery_app

    settings.METRICS_CELERY_QUEUES = ["email"]
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"]
    keys = [f"{prefix}celery", f"{prefix}celery\x06\x169", f"{prefix}email"]
    client.delete(*keys)
    try:
        # Sent to the broker for real, as a web process does when Celery is not eager.
        celery_app.send_task("tests.nothing", queue="celery")
        celery_app.send_task("tests.nothing", queue="celery", priority=9)
        celery_app.send_task("tests.nothing", queue="email")
        found = samples(scrape(headers=with_token()).text)
    finally:
        client.delete(*keys)
    assert value(found, "switchboard_metrics_reading_up", reading="celery_queues") == 1
    assert value(found, "switchboard_celery_queue_length", queue="celery") == 2
    assert value(found, "switchboard_celery_queue_length", queue="email") == 1


def test_bogus_model_names_get_no_series_of_their_own(token_set, settings):
    settings.METRICS_MAX_MODELS = 0  # every name not seen before is one too many
    before = samples(scrape(headers=with_token()).text)
    names = [f"bogus-{uuid.uuid4()}" for _ in range(3)]
    metrics.requests_served([record(name, channel_id=8) for name in names])
    text = scrape(headers=with_token()).text
    assert not any(name in text for name in names)
    other = {"model": "(other)", "channel": "8", "status": "200"}
    found = samples(text)
    counted = value(found, "switchboard_gateway_requests_total", **other)
    assert counted - value(before, "switchboard_gateway_requests_total", **other) == 3


def test_a_request_of_a_bucket_s_bound_counts_in_that_bucket(token_set, settings):
    settings.METRICS_MAX_MODELS = 10_000
    model = f"bucket-test-{uuid.uuid4()}"
    served = [record(model, latency_ms=ms) for ms in (5, 10, 11, 300_000, 300_001)]
    served.append(record(model, latency_ms=100, ttft_ms=50))
    metrics.requests_served(served)
    found = samples(scrape(headers=with_token()).text)
    labels = {"model": model, "channel": "7", "status_class": "2xx"}
    bucket = "switchboard_gateway_request_duration_seconds_bucket"
    assert value(found, bucket, le="0.005", **labels) == 1
    assert value(found, bucket, le="0.01", **labels) == 2
    assert value(found, bucket, le="0.025", **labels) == 3
    assert value(found, bucket, le="300.0", **labels) == 5
    assert value(found, bucket, le="+Inf", **labels) == 6
    duration_sum = value(found, "switchboard_gateway_request_duration_seconds_sum", **labels)
    assert duration_sum == pytest.approx(600.127)
    first_token = {"model": model, "channel": "7"}
    assert (
        value(
            found,
            "switchboard_gateway_time_to_first_token_seconds_bucket",
            le="0.05",
            **first_token,
        )
        == 1
    )


def test_emails_are_counted_sent_and_failed(token_set, settings, db):
    sink = SmtpSink().start()
    settings.MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": sink.port, "timeout": 5},
        }
    }
    sink.sink.refuse = {"gone@example.com"}
    before = samples(scrape(headers=with_token()).text)
    try:
        for n, to in enumerate(["ada@example.com", "zoe@example.com", "gone@example.com"]):
            emails.send_rendered_once(
                f"metrics-test:{uuid.uuid4()}:{n}", to=to, subject="Hi", text="Hi", html="<p>Hi</p>"
            )
    finally:
        sink.stop()
    found = samples(scrape(headers=with_token()).text)
    for outcome, count in [("sent", 2), ("failed", 1)]:
        labels = {"template": "account", "outcome": outcome}
        grown = value(found, "switchboard_emails_total", **labels)
        assert grown - value(before, "switchboard_emails_total", **labels) == count, outcome


# Several worker processes.


def run_worker(directory, *args):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "tests.console.metrics_process", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def scrape_as_a_worker(directory):
    done = run_worker(directory, "scrape")
    text, _ = done.communicate(timeout=60)
    assert done.returncode == 0
    return samples(text)


def test_worker_processes_are_summed_and_stopped_ones_leave_the_gauges(tmp_path):
    requests = {"model": "gpt-4o-mini", "channel": "7", "status": "200"}
    waiting = ("switchboard_gateway_backlog_records", frozenset({("state", "waiting")}))
    running = run_worker(tmp_path, "count", "4", "5", "stay")
    try:
        assert running.stdout.readline().strip() == "ready"
        assert run_worker(tmp_path, "count", "3", "2", "stop").wait(timeout=60) == 0
        found = scrape_as_a_worker(tmp_path)
        assert value(found, "switchboard_gateway_requests_total", **requests) == 7
        answered = {"model": "gpt-4o-mini", "channel": "7", "status_class": "2xx"}
        assert value(found, "switchboard_gateway_request_duration_seconds_count", **answered) == 7
        # The stopped worker's backlog is no longer counted; the running one's is.
        assert found[waiting] == 5
    finally:
        running.kill()
        running.wait(timeout=30)
    # Killed, it could not say so; the next worker to start takes its gauges out.
    assert scrape_as_a_worker(tmp_path)[waiting] == 5
    assert run_worker(tmp_path, "start").wait(timeout=60) == 0
    found = scrape_as_a_worker(tmp_path)
    assert value(found, "switchboard_gateway_requests_total", **requests) == 7
    assert waiting not in found
