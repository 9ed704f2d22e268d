"""On PostgreSQL the writer adds to an address's day in place: the row is updated on its own
page (a HOT update), with no new index entries, even on a page filled by a busy day."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from logs.models import IpDay
from logs.writer import write_batch
from tests.logs.test_pages import make_record

NOON = datetime(2026, 4, 1, 12, tzinfo=UTC)
# More addresses in a day than one page of the table holds.
ADDRESSES = 300


def _updates(table):
    """(updates, of which in place) of `table` in this transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = %s",
            [table],
        )
        return cursor.fetchone() or (0, 0)


@pytest.mark.postgres
def test_an_address_seen_again_is_added_to_in_place(alice):
    write_batch(
        [
            make_record(alice, at=NOON, ip=f"198.51.{n // 250}.{n % 250 + 1}")
            for n in range(ADDRESSES)
        ]
    )
    again = make_record(alice, at=NOON + timedelta(minutes=1), ip="198.51.0.1")
    before = _updates(IpDay._meta.db_table)

    write_batch([again])

    updated, in_place = (a - b for a, b in zip(_updates(IpDay._meta.db_table), before, strict=True))
    assert (updated, in_place) == (1, 1)
    row = IpDay.objects.get(client_ip="198.51.0.1")
    assert (row.requests, row.last_seen) == (2, again.created_at)
