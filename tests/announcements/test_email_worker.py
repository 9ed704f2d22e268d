"""A real Celery worker on Redis sends a price email to every subscriber; when it is killed
in the middle of a batch, another worker takes over and no subscriber is left out.

Delivery is at least once, not exactly once. A worker killed before the mail server accepted
a message leaves no duplicate: the server never had it. A worker killed after the server
accepted a message, but before the worker recorded it as sent, sends that message again, and
the copy carries the same Message-ID, so that mail clients can tell it is the same email.
Both hold whether the server takes one command at a time or pipelined ones (RFC 2920)."""

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pytest
from django.conf import settings

from accounts.models import NotificationSettings, User
from billing import services as billing
from billing.models import ModelPrice
from console.announcements import delivery
from console.announcements.models import Announcement
from console.celery import app as celery_app
from tests.smtp_sink import SmtpSink

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]
SUBSCRIBERS = 300
ONE_THIRD = SUBSCRIBERS // 3


def test_a_worker_killed_before_the_server_accepts_a_message_leaves_no_duplicate_and_no_gap(
    charlie, subscribers, mailbox, start_worker
):
    mailbox.stall_after = ONE_THIRD
    first = start_worker()
    publish_a_price_change(charlie)
    assert mailbox.stalled.wait(60), "the worker never reached the stall"
    first.send_signal(signal.SIGKILL)  # dies while a message is on the wire, unanswered
    first.wait(10)
    mailbox.release.set()
    start_worker()
    wait_until_every_delivery_is_sent()
    assert sorted(mailbox.recipients()) == subscribers


def test_a_worker_killed_after_the_server_accepted_a_message_resends_it_with_the_same_message_id(
    charlie, subscribers, mailbox, start_worker
):
    first = start_worker()
    mailbox.kill_after = (ONE_THIRD, first.pid)  # stored, then the sender dies unanswered
    publish_a_price_change(charlie)
    assert mailbox.killed.wait(60), "the worker never reached the kill"
    first.wait(10)
    start_worker()
    wait_until_every_delivery_is_sent()
    assert sorted(set(mailbox.recipients())) == subscribers
    accepted = mailbox.messages[ONE_THIRD - 1]
    [recipient] = accepted["to"]
    received_twice = {to: ids for to, ids in message_ids(mailbox).items() if len(ids) > 1}
    assert received_twice == {recipient: [message_id(accepted)] * 2}


@pytest.fixture
def subscribers():
    users = User.objects.bulk_create(
        User(email=f"subscriber{i}@example.com", password="!") for i in range(SUBSCRIBERS)
    )
    NotificationSettings.objects.bulk_create(
        NotificationSettings(user=user, price_emails=True) for user in users
    )
    return sorted(user.email for user in users)


@pytest.fixture
def smtp():
    server = SmtpSink().start()
    yield server
    server.stop()


@pytest.fixture(params=[False, True], ids=["one command at a time", "pipelined"])
def mailbox(smtp, request):
    smtp.sink.pipelining = request.param
    return smtp.sink


@pytest.fixture
def real_celery():
    celery_app.conf.task_always_eager = False
    celery_app.control.purge()
    yield
    celery_app.control.purge()
    celery_app.conf.task_always_eager = True


@pytest.fixture
def start_worker(smtp, real_celery):
    """Starts a Celery worker process (`--pool solo`: the process that talks SMTP) that reads
    the test database and mails into the sink; every one started is stopped after the test."""
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "CELERY_RESTORE_SECONDS": "1",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp.port),
        "EMAIL_USE_TLS": "0",
        "SECRET_KEY": settings.SECRET_KEY,
    }
    command = [sys.executable, "-m", "celery", "-A", "console", "worker", "--pool", "solo",
               "--loglevel", "WARNING", "--without-heartbeat", "--without-gossip",
               "--without-mingle"]  # fmt: skip
    started = []

    def start():
        started.append(subprocess.Popen(command, cwd=settings.BASE_DIR, env=env))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(20)


def publish_a_price_change(staff_user):
    price = ModelPrice.objects.create(model="gpt-4o-mini", vendor="OpenAI")
    # Published with the change, in one announcement.
    billing.price_change(
        target=price, new_values={"model_multiplier": 2}, reason="test", staff_user=staff_user
    )


def wait_until_every_delivery_is_sent(timeout=90):
    """Waits for the workers to record every delivery as sent (each after the server accepted
    it), then a moment more, in which nothing else may arrive."""
    announcement = Announcement.objects.get()
    deadline = time.monotonic() + timeout
    while delivery.delivery_counts(announcement) != {"sent": SUBSCRIBERS}:
        assert time.monotonic() < deadline, "timed out waiting for every delivery to be sent"
        time.sleep(0.1)
    time.sleep(1)


def message_ids(mailbox):
    """{recipient: the Message-ID of each email they received, in order}"""
    ids = defaultdict(list)
    for item in mailbox.messages:
        for address in item["to"]:
            ids[address].append(message_id(item))
    return ids


def message_id(item):
    return item["message"]["Message-ID"].strip()  # a long one arrives folded
