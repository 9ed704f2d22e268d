"""Price-change email to many subscribers: emails per second per worker process, duplicates and
losses, against a real SMTP server in a process of its own.

Fills a PostgreSQL database with subscribers (COPY), publishes a price change, and runs the
fan-out and every batch task in this one process (Celery eager), as one worker process would,
over SMTP to tests/bench/smtp_counter.py: a small server in another process that keeps nothing
and counts messages by recipient and Message-ID, so that the figure is the sender's. Then it
compares what arrived with who should have got it, and prints, side by side:

- the target: 2,000 emails/s per worker process (issue 19);
- the server's own capacity: a bare client pipelining one prepared email at it, over and over;
- the old path (--baseline N subscribers, 0 to skip): each email rendered, built by Django's
  EmailMessage and sent with smtplib's sendmail, its row marked sent by an ORM update with a
  synchronous commit, as the mailer did before issue 19.

With --sink aiosmtpd the server is aiosmtpd (the one the email tests use), in its own process:
on this 2-core machine it takes about 1,400 emails a second from a bare client, so it, not the
sender, would be what is measured. The CPU each process spent per email is printed too: on a
loaded machine, a steadier figure than the time on the clock. Nothing is asserted.

    .venv/bin/python tests/bench/bench_email.py [--subscribers 100000] [--baseline 2000]
        [--sink counter|aiosmtpd] [--profile] [--database postgres://…]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
TARGET = 2_000  # emails/s per worker process


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=2_000, help="Subscribers for the old path.")
    parser.add_argument("--sink", choices=["counter", "aiosmtpd"], default="counter")
    parser.add_argument("--profile", action="store_true", help="Profile the sending (cProfile).")
    parser.add_argument(
        "--database", default="postgres://postgres@127.0.0.1:5432/switchboard_bench_email"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    setup_django(args.database)
    fill_subscribers(args.database, args.subscribers)

    from django.conf import settings

    from accounts.models import EmailDelivery, User

    expected = set(
        User.objects.filter(notifications__price_emails=True).values_list("email", flat=True)
    )
    capacity = sink_capacity(args.sink)

    warm_up()
    sink = Sink(args.sink)
    settings.MAILERS = sink.mailers()
    cpu = CpuClock(sink)
    started = time.perf_counter()
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        announcement = profiler.runcall(publish_a_price_change)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    else:
        announcement = publish_a_price_change()
    elapsed, cpu = time.perf_counter() - started, cpu.spent()
    report = sink.report()
    marked = EmailDelivery.objects.filter(
        key=f"announcement:{announcement.pk}", status="sent"
    ).count()

    baseline = old_path(announcement, args.baseline) if args.baseline else None
    load_after = os.getloadavg()[0]

    received = report["recipients"]
    messages = report["messages"]
    print(f"\nOne price change to {len(expected):,} subscribers, in one worker process, over SMTP")
    print(f"to {args.sink} (a process of its own):")
    old = f"{baseline:,.0f}/s (same run, {args.baseline:,} subscribers)" if baseline else "not run"
    print(
        f"  speed:       {messages / elapsed:,.0f} emails/s   target {TARGET:,}/s   old path {old}"
    )
    print(f"  sent:        {messages:,} emails in {elapsed:.1f} s; ", end="")
    print(f"delivery rows marked sent: {marked:,}")
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    same_id, no_id = messages - report["message_ids"], report["without_message_id"]
    print(f"  duplicates:  {duplicates} (same Message-ID twice: {same_id}, without one: {no_id})")
    losses, strays = len(expected - set(received)), len(set(received) - expected)
    print(f"  losses:      {losses} (and messages to nobody expected: {strays})")
    sender, server, database = (seconds / max(messages, 1) * 1e6 for seconds in cpu)
    print(f"  CPU/email:   sender {sender:,.0f} µs, server {server:,.0f} µs, PostgreSQL ", end="")
    print(f"{database:,.0f} µs ({sender + server + database:,.0f} µs, spent one after the other)")
    print(f"  server:      takes {capacity:,.0f} emails/s from a bare pipelining client")
    print(f"  machine:     {os.cpu_count()} cores; load average {load_before:.1f} before, ", end="")
    print(f"{load_after:.1f} after")


def setup_django(database):
    import psycopg

    name = database.rsplit("/", 1)[1]
    with psycopg.connect(database.rsplit("/", 1)[0] + "/postgres", autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{name}"')
    os.environ.update(
        DATABASE_URL=database,
        SECRET_KEY="bench-" + "x" * 40,
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="console.settings",
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from console.celery import app as celery_app

    celery_app.conf.task_always_eager = True


def warm_up():
    """What a worker process has done by its second task: the URLs and templates loaded."""
    from django.template.loader import get_template
    from django.urls import reverse

    from console.celery import app as celery_app

    reverse("console:unsubscribe", args=["-"])
    get_template("emails/base.html")
    celery_app.finalize()  # its tasks registered, as a started worker has them


class CpuClock:
    """CPU time spent by this process, the SMTP server's and this connection's PostgreSQL
    backend: on a loaded machine, a steadier figure than the time on the clock."""

    def __init__(self, sink):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (backend,) = cursor.fetchone()
        self.processes = [psutil.Process(), sink.process_info, psutil.Process(backend)]
        self.start = self.now()

    def now(self):
        return [sum(p.cpu_times()[:2]) for p in self.processes]

    def spent(self):
        return [after - before for before, after in zip(self.start, self.now(), strict=True)]


def fill_subscribers(database, count):
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(database) as connection, connection.cursor() as cursor:
        with cursor.copy(
            "COPY accounts_user (email, name, time_zone, is_staff, is_active, "
            "is_superuser, password, date_joined) FROM STDIN"
        ) as copy:
            for i in range(count):
                row = (f"subscriber{i}@example.com", f"Subscriber {i}", "UTC", False, True, False)
                copy.write_row((*row, "!", "2026-01-01T00:00:00Z"))
        cursor.execute(
            "INSERT INTO accounts_notificationsettings (user_id, price_emails, price_scope, "
            "price_vendors, price_models, maintenance_emails, security_emails, "
            "low_balance_emails, low_balance_threshold, low_balance_alerted) "
            "SELECT id, true, 'all', '[]', '[]', false, true, false, 5000000, false "
            "FROM accounts_user"
        )
        connection.commit()
        # As autovacuum would have by the time a real list is mailed: without statistics the
        # planner reads the whole subscriber list for each batch of 500.
        cursor.execute("ANALYZE accounts_user, accounts_notificationsettings")
    print(f"{count:,} subscribers in {time.perf_counter() - started:.1f} s")


def publish_a_price_change():
    """A staff member changes a price: it is announced and, on commit, emailed (eagerly)."""
    from accounts.models import User
    from billing.models import ModelPrice
    from billing.services import price_change

    staff = User.objects.create_user(f"staff{time.time_ns()}@example.com", is_staff=True)
    price, _ = ModelPrice.objects.get_or_create(model="gpt-4o-mini", vendor="OpenAI")
    adjustments = price_change(
        target=price,
        new_values={"model_multiplier": price.model_multiplier + 1},
        reason="bench",
        staff_user=staff,
    )
    return adjustments[0].announcement


class Sink:
    """The counting SMTP server, in a process of its own."""

    def __init__(self, kind):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        command = [sys.executable, "-m", "tests.bench.smtp_counter", "--port", str(self.port)]
        self.process = subprocess.Popen(
            command + (["--aiosmtpd"] if kind == "aiosmtpd" else []),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout.readline().strip() == "ready"
        self.process_info = psutil.Process(self.process.pid)

    def mailers(self):
        options = {"host": "127.0.0.1", "port": self.port, "use_tls": False, "timeout": 30}
        return {"default": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                            "OPTIONS": options}}  # fmt: skip

    def report(self):
        self.process.stdin.close()
        report = json.loads(self.process.stdout.readline())
        self.process.wait(10)
        return report


def sink_capacity(kind, count=5_000):
    """Emails/s the server takes from a client that does nothing else: the same prepared
    email, pipelined as the mailer sends it."""
    import smtplib

    from accounts.emails.outbox import envelope, refusal

    sink = Sink(kind)
    body = b"".join(
        f"Line {i} of a price email, about as long as one.\r\n".encode() for i in range(80)
    )
    smtp = smtplib.SMTP("127.0.0.1", sink.port)
    smtp.ehlo()
    pipelined = smtp.has_extn("pipelining")
    started = time.perf_counter()
    for i in range(count):
        data = f"Message-ID: <{i}@bench>\r\nSubject: x\r\n\r\n".encode() + body
        if pipelined:
            smtp.send(envelope("noreply@example.com", f"probe{i}@example.com"))
            assert refusal(smtp, "noreply@example.com", f"probe{i}@example.com") is None
            smtp.send(data + b".\r\n")
            assert smtp.getreply()[0] == 250
        else:
            smtp.sendmail("noreply@example.com", [f"probe{i}@example.com"], data)
    rate = count / (time.perf_counter() - started)
    smtp.quit()
    sink.report()
    return rate


def old_path(announcement, subscribers, batch_size=500):
    """Emails/s of the mailer as it was before issue 19, on the first `subscribers`, to a
    server of its own: per email, the templates rendered, Django's EmailMessage built and
    sent through the SMTP backend (smtplib's sendmail), and the row marked sent by an ORM
    update whose commit waits for the disk."""
    from django.conf import settings
    from django.core.mail import EmailMultiAlternatives, mailers
    from django.utils import timezone

    from accounts import emails
    from accounts.models import EmailDelivery, User
    from console.announcements import delivery
    from console.lib import unsubscribe

    users = list(User.objects.filter(notifications__price_emails=True).order_by("pk")[:subscribers])
    context = {
        "announcement": announcement,
        "subject_prefix": delivery._subject_prefix(announcement),
        "body_text": delivery.plain_text(announcement.body_html),
        "kind_label": unsubscribe.KINDS["price"][1],
    }
    sink = Sink("counter")
    settings.MAILERS = sink.mailers()
    key = f"baseline:{announcement.pk}"
    started = time.perf_counter()
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        claimed = claim_the_old_way(key, [u.email for u in batch])
        connection = mailers.default
        connection.open()
        for user in batch:
            row = claimed[user.email]
            link = unsubscribe.unsubscribe_url(user, "price")
            personal = {"name": user.name, "unsubscribe_url": link}
            subject, text, html = emails.render_email("announcement", {**context, **personal})
            headers = {
                "Message-ID": emails._message_id(key, user.email, row.pk, "example.com"),
                **unsubscribe.headers(user, "price", link),
            }
            message = EmailMultiAlternatives(subject, text, to=[user.email], headers=headers)
            message.attach_alternative(html, "text/html")
            connection.send_messages([message])
            EmailDelivery.objects.filter(pk=row.pk).update(
                status="sent", sent_at=timezone.now(), last_error=""
            )
        connection.close()
    rate = len(users) / (time.perf_counter() - started)
    report = sink.report()
    assert report["messages"] == len(users), report["messages"]
    return rate


def claim_the_old_way(key, recipients, claimer="old"):
    """The rows created, claimed and read back in three statements, as they were."""
    from django.db.models import F
    from django.utils import timezone

    from accounts.models import EmailDelivery

    EmailDelivery.objects.bulk_create(
        [EmailDelivery(key=key, recipient=r, template="announcement") for r in recipients],
        ignore_conflicts=True,
    )
    rows = EmailDelivery.objects.filter(key=key, recipient__in=recipients)
    rows.filter(status="pending").update(
        status="sending", claimed_at=timezone.now(), claimed_by=claimer, attempts=F("attempts") + 1
    )
    return {d.recipient: d for d in rows.filter(status="sending", claimed_by=claimer)}


if __name__ == "__main__":
    main()
