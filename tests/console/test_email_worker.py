"""A real Celery worker on Redis sends a price email to every subscriber exactly once, even
when it is killed in the middle of a batch and another worker takes over."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings

from accounts.models import NotificationSettings, User
from billing import services as billing
from billing.models import ModelPrice
from console import services
from console.celery import app as celery_app
from console.models import Announcement
from tests.smtp_sink import SmtpSink

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]
SUBSCRIBERS = 300


def worker(env):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "console",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=settings.BASE_DIR,
        env=env,
    )


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def real_celery():
    celery_app.conf.task_always_eager = False
    celery_app.control.purge()
    yield
    celery_app.control.purge()
    celery_app.conf.task_always_eager = True


def test_a_worker_killed_mid_batch_leaves_no_duplicate_and_no_gap(charlie, real_celery):
    db = settings.DATABASES["default"]
    users = User.objects.bulk_create(
        User(email=f"subscriber{i}@example.com", password="!") for i in range(SUBSCRIBERS)
    )
    NotificationSettings.objects.bulk_create(
        NotificationSettings(user=user, price_emails=True) for user in users
    )
    price = ModelPrice.objects.create(model="gpt-4o-mini", vendor="OpenAI")
    sink = SmtpSink().start()
    sink.sink.stall_after = SUBSCRIBERS // 3
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "CELERY_RESTORE_SECONDS": "1",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(sink.port),
        "EMAIL_USE_TLS": "0",
        "SECRET_KEY": settings.SECRET_KEY,
    }
    first = worker(env)
    second = None
    try:
        adjustments = billing.price_change(
            target=price, new_values={"model_multiplier": 2}, reason="test", staff_user=charlie
        )
        services.price_adjustments_publish(adjustments=adjustments, staff_user=charlie)
        assert sink.sink.stalled.wait(60), "the worker never reached the stall"
        first.send_signal(signal.SIGKILL)  # dies while a message is on the wire
        first.wait(10)
        sink.sink.release.set()
        second = worker(env)
        wait_for(lambda: len(sink.sink.recipients()) >= SUBSCRIBERS, 90, "every subscriber")
        time.sleep(1)  # nothing more may arrive
    finally:
        for process in (first, second):
            if process and process.poll() is None:
                process.terminate()
                process.wait(20)
        sink.stop()
    received = sink.sink.recipients()
    assert len(received) == SUBSCRIBERS
    assert sorted(received) == sorted(user.email for user in users)
    assert services.delivery_counts(Announcement.objects.get()) == {"sent": SUBSCRIBERS}
