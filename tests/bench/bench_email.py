"""Price-change email fan-out to many subscribers: emails per second, duplicates, losses.

Fills a PostgreSQL database with subscribers (COPY), publishes a price adjustment, and runs the
fan-out and every batch task in this process (Celery eager) into Django's locmem backend or,
with --smtp, into a local SMTP sink on 127.0.0.1. Then counts what arrived against who should
have got it. Figures are printed; nothing is asserted.

    .venv/bin/python tests/bench/bench_email.py [--subscribers 100000] [--smtp]
"""

import argparse
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--smtp", action="store_true", help="Send to a local SMTP sink.")
    parser.add_argument(
        "--database", default="postgres://postgres@127.0.0.1:5432/switchboard_bench_email"
    )
    args = parser.parse_args()

    import psycopg

    name = args.database.rsplit("/", 1)[1]
    with psycopg.connect(args.database.rsplit("/", 1)[0] + "/postgres", autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{name}"')
    os.environ.update(
        DATABASE_URL=args.database,
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
    from django.conf import settings
    from django.core import mail
    from django.test.utils import setup_test_environment

    from accounts.models import EmailDelivery, User
    from billing.models import ModelPrice
    from billing.services import price_change
    from console.announcements import services
    from console.celery import app as celery_app

    celery_app.conf.task_always_eager = True
    sink = None
    if args.smtp:
        from tests.smtp_sink import SmtpSink

        sink = SmtpSink().start()
        settings.MAILERS = {
            "default": {
                "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                "OPTIONS": {"host": "127.0.0.1", "port": sink.port, "use_tls": False},
            }
        }
    else:
        setup_test_environment()  # the locmem backend: mail.outbox

    started = time.perf_counter()
    with psycopg.connect(args.database) as connection, connection.cursor() as cursor:
        with cursor.copy(
            "COPY accounts_user (email, name, time_zone, is_staff, is_active, "
            "is_superuser, password, date_joined) FROM STDIN"
        ) as copy:
            for i in range(args.subscribers):
                copy.write_row(
                    (
                        f"subscriber{i}@example.com",
                        f"Subscriber {i}",
                        "UTC",
                        False,
                        True,
                        False,
                        "!",
                        "2026-01-01T00:00:00Z",
                    )
                )
        cursor.execute(
            "INSERT INTO accounts_notificationsettings (user_id, price_emails, price_scope, "
            "price_vendors, price_models, maintenance_emails, security_emails, "
            "low_balance_emails, low_balance_threshold, low_balance_alerted) "
            "SELECT id, true, 'all', '[]', '[]', false, true, false, 5000000, false "
            "FROM accounts_user"
        )
        connection.commit()
    print(f"{args.subscribers:,} subscribers in {time.perf_counter() - started:.1f} s")

    staff = User.objects.create_user("staff@example.com", is_staff=True)
    price = ModelPrice.objects.create(model="gpt-4o-mini", vendor="OpenAI")
    adjustments = price_change(
        target=price, new_values={"model_multiplier": 2}, reason="bench", staff_user=staff
    )
    started = time.perf_counter()
    announcement = services.price_adjustments_publish(adjustments=adjustments, staff_user=staff)
    elapsed = time.perf_counter() - started

    received = sink.sink.recipients() if sink else [to for m in mail.outbox for to in m.to]
    counts = Counter(received)
    expected = set(
        User.objects.filter(notifications__price_emails=True).values_list("email", flat=True)
    )
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    missing = len(expected - set(counts))
    sent_rows = EmailDelivery.objects.filter(
        key=f"announcement:{announcement.pk}", status="sent"
    ).count()
    target = "a local SMTP sink" if sink else "the locmem backend"
    print(f"Fan-out of one price announcement into {target}:")
    print(f"  {len(received):,} emails in {elapsed:.1f} s: {len(received) / elapsed:,.0f} emails/s")
    print(
        f"  duplicates: {duplicates}, missing: {missing}, delivery rows marked sent: {sent_rows:,}"
    )
    if sink:
        sink.stop()


if __name__ == "__main__":
    main()
