"""A gateway process's hold book on its own, in a process of its own: reserves and spends from
one account as fast as it can, settling like the gateway, until a given time.

    python -m tests.billing.lease_process OWNER USER_ID START_AT STOP_AT

Run by tests/billing/test_guard.py against the test database (DATABASE_URL). Prints the
number of requests it served; exits non-zero, with the traceback, on any error.
"""

import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import django

COST = 10


def main(owner, user_id, start_at, stop_at):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    django.setup()
    from django.conf import settings
    from django.db import close_old_connections

    from billing.holds import HoldBook, Refused
    from logs.writer import parts_of, write_flush
    from tests.logs.test_pages import make_record

    # A lease of one request: every request goes to the database for its money.
    settings.LEASE_MAX = COST

    class User:
        pk = user_id

    database = ThreadPoolExecutor(max_workers=1)

    async def run_db(function, **kwargs):
        def work():
            close_old_connections()
            return function(**kwargs)

        return await asyncio.get_running_loop().run_in_executor(database, work)

    async def spend():
        book = HoldBook(owner, run_db)
        served, records, settled_at = 0, [], time.monotonic()
        while time.time() < stop_at:
            try:
                await book.reserve(user_id=user_id, token_id=None, limited=False, amount=COST)
            except Refused:
                book.funds_changed([user_id])  # ask the database again at once
                await asyncio.sleep(0.001)
                continue
            charged = book.finish(
                user_id=user_id, token_id=None, limited=False, reserved=COST, cost=COST
            )
            records.append(make_record(User, cost=charged))
            served += 1
            if time.monotonic() - settled_at > 0.2:
                parts = parts_of(records, book.take_settlement())
                records, settled_at = [], time.monotonic()
                await run_db(write_flush, parts=list(parts.values()), owner=owner)
        parts = parts_of(records, book.release_everything())
        await run_db(write_flush, parts=list(parts.values()), owner=owner)
        return served

    time.sleep(max(start_at - time.time(), 0))
    print(asyncio.run(spend()))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
