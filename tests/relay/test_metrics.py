"""The gateway's metrics, after real requests through the official client: counted from their
records at the flush, by model, channel and status, once even when the database refuses them
for a while; upstream failures by channel; the flushes; and two web workers' counts summed."""

import httpx
import openai
import psutil
import pytest

from billing import services
from billing.models import LedgerEntry
from logs.models import RequestLog
from tests.console.test_metrics import samples, value
from tests.relay.conftest import wait_until
from tests.relay.processes import GatewayProcess

TOKEN = "a-long-random-metrics-token-of-this-test"
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def scraper(live_site, settings):
    """Scrapes the live site as Prometheus does, with the token; returns its samples."""
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOW = []

    def scrape(text=False):
        response = httpx.get(
            f"{live_site.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 200
        return response.text if text else samples(response.text)

    return scrape


def delta(after, before, name, **labels):
    return value(after, name, **labels) - value(before, name, **labels)


def grew(scrape, before, name, by, **labels):
    """Waits for the flush that counts them: the sample grew by `by` since `before`."""
    return wait_until(
        lambda: delta(scrape(), before, name, **labels) == by,
        message=f"{name} {labels} to grow by {by}",
    )


def test_requests_are_counted_by_model_channel_and_status(api, channel, scraper):
    before = scraper()
    api.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    list(api.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
    answered = {"model": "gpt-4o-mini", "channel": str(channel.pk)}
    grew(scraper, before, "switchboard_gateway_requests_total", 2, **answered, status="200")
    after = scraper()
    duration = "switchboard_gateway_request_duration_seconds_count"
    assert delta(after, before, duration, **answered, status_class="2xx") == 2
    first_token = "switchboard_gateway_time_to_first_token_seconds_count"
    assert delta(after, before, first_token, **answered) == 1


def test_a_model_we_do_not_price_is_counted_under_one_name(api, channel, scraper):
    before = scraper()
    bogus = "my-secret-project-model-7f3a"
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model=bogus, messages=HELLO)
    unknown = {"model": "(unknown model)", "channel": "none", "status": "404"}
    grew(scraper, before, "switchboard_gateway_requests_total", 1, **unknown)
    assert bogus not in scraper(text=True)


def test_upstream_failures_are_counted_by_channel(api, upstream, channel, scraper):
    before = scraper()
    upstream.behaviour["status"] = 503
    with pytest.raises(openai.APIStatusError):
        api.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    failed = {"channel": str(channel.pk), "error": "503"}
    after = scraper()  # counted as it happens, not at the flush
    assert delta(after, before, "switchboard_gateway_upstream_errors_total", **failed) == 1


def test_flushes_are_measured(api, channel, scraper):
    before = scraper()
    for _ in range(3):
        api.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    grew(scraper, before, "switchboard_gateway_flush_records_sum", 3)
    after = scraper()
    for measured in ["duration_seconds", "lag_seconds"]:
        assert delta(after, before, f"switchboard_gateway_flush_{measured}_count") >= 1
    # A quiet gateway folds each flush's usage into the rollups: one pending row here a flush.
    assert delta(after, before, "switchboard_gateway_fold_rows_sum") >= 1
    assert delta(after, before, "switchboard_gateway_fold_duration_seconds_count") >= 1
    # The flush loop runs every 50 ms here: no record waited seconds.
    lag = "switchboard_gateway_flush_lag_seconds_bucket"
    assert delta(after, before, lag, le="5.0") == delta(after, before, lag, le="+Inf")
    assert value(after, "switchboard_gateway_backlog_records", state="waiting") == 0


@pytest.mark.postgres
def test_records_the_database_refuses_are_shown_waiting_and_counted_once(
    api, channel, funded, scraper, refusals
):
    before = scraper()
    set_aside = ("switchboard_gateway_backlog_records", frozenset({("state", "set_aside")}))
    answered = {"model": "gpt-4o-mini", "channel": str(channel.pk), "status": "200"}
    refusals.rows_of(funded)
    for _ in range(2):
        api.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    wait_until(lambda: scraper().get(set_aside) == 2, message="the records set aside")
    refusals.none()
    wait_until(lambda: scraper().get(set_aside) == 0, 15, "the records written at a retry")
    grew(scraper, before, "switchboard_gateway_requests_total", 2, **answered)


class TwoWorkers(GatewayProcess):
    """The site under uvicorn with two worker processes sharing its port, as in production."""

    def _command(self):
        return [*super()._command(), "--workers", "2"]

    def workers(self):
        children = psutil.Process(self.process.pid).children()
        return [p for p in children if "spawn_main" in " ".join(p.cmdline())]


def ask_on_a_new_connection(url, key):
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)


@pytest.mark.postgres
def test_two_web_workers_answer_a_scrape_with_the_sum_of_both(
    transactional_db, token_and_key, channel, tmp_path
):
    token, key = token_and_key
    # Enough for a lease in each worker: none asks the other (paused below) to give money back.
    services.balance_credit(user=token.user, amount=1_000_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    directory = tmp_path / "metrics"  # made by the workers
    server = TwoWorkers(
        tmp_path,
        "two-workers",
        PROMETHEUS_MULTIPROC_DIR=directory,
        METRICS_TOKEN=TOKEN,
        GATEWAY_FLUSH_SECONDS=0.1,
    ).start()
    answered = {"model": "gpt-4o-mini", "channel": str(channel.pk), "status": "200"}
    try:
        wait_until(lambda: server.log().count("Application startup complete") == 2, 30)
        workers = server.workers()
        assert len(workers) == 2
        # Each worker in turn serves alone, the other paused: 3 requests, then 4. A worker is
        # paused only once its rows are written: paused inside a flush, it would keep the
        # account's row locked from the other.
        for serving, count, logged in zip(workers, (3, 4), (3, 7), strict=True):
            paused = next(w for w in workers if w is not serving)
            paused.suspend()
            try:
                for _ in range(count):
                    ask_on_a_new_connection(server.url, key)
            finally:
                paused.resume()
            wait_until(lambda n=logged: RequestLog.objects.count() == n, 10, "the log rows")

        def scraped():
            headers = {"Authorization": f"Bearer {TOKEN}"}
            response = httpx.get(f"{server.url}/metrics", headers=headers)
            return value(samples(response.text), "switchboard_gateway_requests_total", **answered)

        wait_until(lambda: scraped() == 7, 10, "both workers' flushes")
        # Whichever worker answers a scrape (each on a new connection), it answers the sum.
        assert [scraped() for _ in range(6)] == [7] * 6
    finally:
        code = server.stop()
    assert code == 0, server.log()
    # Both stopped as workers do: their gauges left the sums, their counts stay.
    assert not list(directory.glob("gauge_live*.db"))
    assert len(list(directory.glob("counter_*.db"))) >= 2
