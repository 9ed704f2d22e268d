"""`make run` behaves like production where it matters: the periodic jobs run (no broker, so no
beat: the web process runs them), the site's links follow HOST and PORT, and the terminal shows
no noise of our making."""

import asyncio
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from billing.models import ModelPrice
from billing.services import price_change
from console.celery import app as celery_app
from console.lib.background import PeriodicJobs
from relay.models import Channel
from tests.relay.conftest import make_channel, wait_until
from tests.relay.processes import GatewayProcess, database_environment

ROOT = settings.BASE_DIR


def python(code, **environment):
    """Runs `code` in a fresh Python with the project's settings and this environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    env = {k: v for k, v in env.items() if k not in {"SITE_URL", "HOST", "PORT", "DEBUG"}}
    env |= {"DJANGO_SETTINGS_MODULE": "console.settings", **environment}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


# The periodic jobs, in process.


def test_the_web_process_runs_the_periodic_jobs_without_a_broker(
    transactional_db, tmp_path, upstream, prices, default_line
):
    """A scheduled price change applies and a channel taken out of rotation comes back, with
    nothing running but the web server, as `make run` starts it."""
    channel = make_channel(upstream)
    Channel.objects.filter(pk=channel.pk).update(
        auto_disabled_at=timezone.now(), disabled_reason="5 failures in a row"
    )
    price = ModelPrice.objects.get(model="gpt-4o-mini")
    price_change(
        target=price,
        new_values={"model_multiplier": "0.5"},
        reason="Cheaper",
        staff_user=None,
        effective_at=timezone.now() + timedelta(seconds=1),
    )
    server = GatewayProcess(
        tmp_path, PERIODIC_JOBS_IN_PROCESS="1", PERIODIC_JOB_SECONDS="0.5", REDIS_URL=""
    ).start()
    try:
        wait_until(
            lambda: Channel.objects.get(pk=channel.pk).auto_disabled_at is None,
            timeout=20,
            message="the channel back in rotation",
        )
        wait_until(
            lambda: ModelPrice.objects.get(pk=price.pk).model_multiplier == Decimal("0.5"),
            timeout=20,
            message="the price change applied",
        )
    finally:
        server.stop()
    log = server.log()
    jobs = len(settings.CELERY_BEAT_SCHEDULE)
    assert f"Running {jobs} periodic jobs in this process" in log
    assert "Application shutdown complete" in log
    assert "Traceback" not in log


def test_the_test_run_starts_no_periodic_jobs(live_site):
    from console.asgi import periodic_jobs

    assert not settings.PERIODIC_JOBS_IN_PROCESS
    assert periodic_jobs.loops == []
    # Processes the tests start inherit it.
    assert os.environ["PERIODIC_JOBS_IN_PROCESS"] == "0"


def test_they_are_on_by_default_without_a_broker_and_off_with_one():
    code = "from django.conf import settings; print(settings.PERIODIC_JOBS_IN_PROCESS)"
    embedded = python(code, DEBUG="1", PERIODIC_JOBS_IN_PROCESS="", REDIS_URL="")
    assert embedded.strip().endswith("True")
    broker = python(code, DEBUG="1", PERIODIC_JOBS_IN_PROCESS="", REDIS_URL="redis://x:6379/0")
    assert broker.strip().endswith("False")


runs = []
running = threading.Semaphore(1)


@shared_task(name="tests.dev_shape.slow_and_failing")
def slow_and_failing():
    # Never two runs of one job at once: a second would find the semaphore taken.
    assert running.acquire(blocking=False), "two runs of one job at once"
    try:
        runs.append(threading.current_thread().name)
        time.sleep(0.2)
        raise RuntimeError("the upstream is down")
    finally:
        running.release()


def test_a_job_runs_in_a_thread_one_run_at_a_time_and_a_failure_is_only_logged(caplog):
    runs.clear()
    jobs = PeriodicJobs(
        celery_app, {"flaky": {"task": "tests.dev_shape.slow_and_failing", "schedule": 0.01}}
    )

    async def serve():
        jobs.start()
        # The event loop keeps its pace while the jobs sleep and fail in their thread.
        started = time.monotonic()
        ticks = 0
        while time.monotonic() - started < 0.9:
            await asyncio.sleep(0.01)
            ticks += 1
        await jobs.stop()
        return ticks

    ticks = asyncio.run(serve())
    assert ticks > 40
    assert 3 <= len(runs) <= 5  # 0.2 s each, one after the other
    assert all(name.startswith("periodic") for name in runs)
    failures = [r for r in caplog.records if "Periodic job flaky failed" in r.getMessage()]
    assert len(failures) == len(runs)
    # A stop waits for the run in progress, then nothing runs any more.
    count = len(runs)
    time.sleep(0.3)
    assert len(runs) == count


# The site's address follows `make run PORT=…`.

SITE = (
    "from django.conf import settings; "
    "print(settings.SITE_URL, settings.ALLOWED_HOSTS[0], settings.CSRF_TRUSTED_ORIGINS[0])"
)


def test_in_development_the_site_url_follows_host_and_port():
    assert python(SITE, DEBUG="1", PORT="8301").split()[-3:] == [
        "http://127.0.0.1:8301",
        "127.0.0.1",
        "http://127.0.0.1:8301",
    ]
    # Listening on every interface, links use this machine's own address.
    assert python(SITE, DEBUG="1", HOST="0.0.0.0", PORT="8302").split()[-3] == (  # noqa: S104
        "http://127.0.0.1:8302"
    )


def test_a_site_url_that_is_set_wins_and_production_never_guesses():
    explicit = python(SITE, DEBUG="1", PORT="8301", SITE_URL="https://api.example.com/")
    assert explicit.split()[-3:] == [
        "https://api.example.com",
        "api.example.com",
        "https://api.example.com",
    ]
    production = python(SITE, DEBUG="0", PORT="8301", SECRET_KEY=settings.SECRET_KEY)
    assert production.split()[-3] == "http://127.0.0.1:8000"


def test_the_demo_banner_names_the_port_make_run_serves_on(transactional_db):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    env.pop("SITE_URL", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "demo_data"],
        cwd=ROOT,
        env={**env, **database_environment(), "DEBUG": "1", "HOST": "127.0.0.1", "PORT": "8301"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "demo is ready at http://127.0.0.1:8301\n" in done.stdout
    assert "(http://127.0.0.1:8301/admin/)" in done.stdout
    assert "curl http://127.0.0.1:8301/v1/chat/completions" in done.stdout
    assert ":8000" not in done.stdout


# No noise in the terminal.


def test_a_task_run_eagerly_prints_no_broker_warning():
    """Celery takes a producer from the broker even for an eager task: the in-memory one must
    be named fully, or kombu warns 'No hostname was supplied' at the first email of a run."""
    output = python(
        "import django; django.setup()\n"
        "from celery import shared_task\n"
        "@shared_task\n"
        "def hello(): return 'hi'\n"
        "print(hello.delay().get())",
        DEBUG="1",
        REDIS_URL="",
    )
    assert output.startswith("hi\n")
    assert "hostname" not in output


def test_static_files_stream_under_asgi_without_a_warning(live_site, recwarn):
    import httpx

    served = httpx.get(f"{live_site.url}/static/css/site.css")
    assert served.status_code == 200
    assert served.content == (ROOT / "static" / "css" / "site.css").read_bytes()
    assert not [w for w in recwarn if "StreamingHttpResponse" in str(w.message)]
