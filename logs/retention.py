"""Retention: raw logs and IP records after LOG_RETENTION_DAYS, rollups after longer.

On PostgreSQL the request log is partitioned by day (logs.partitions): a day past the window
is dropped whole, once all of it is (so a row stays up to a day longer), with no row deleted
and nothing left for VACUUM.

Elsewhere, and for the other tables, old rows go in small batches, each its own short
transaction, so that no table is locked for long while the gateway writes to it. Log ids are
time-ordered (UUIDv7), so "older than the cutoff" is a range of the primary key: each batch is
an index range scan.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from logs import partitions
from logs.models import (
    ChannelMinute,
    IpDay,
    PlatformMinute,
    RequestLog,
    UsageDay,
    UsageHour,
    UsageMinute,
)

BATCH = 5_000


def _delete_in_batches(rows, *, dry_run):
    if dry_run:
        return rows.count()
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(rows.values_list("pk", flat=True)[:BATCH])
            if not ids:
                return deleted
            deleted += rows.model.objects.filter(pk__in=ids).delete()[0]


def prune(*, now=None, dry_run=False):
    """Removes what is past its retention. Safe to run again; returns counts per table."""
    now = now or timezone.now()
    log_cutoff = now - timedelta(days=settings.LOG_RETENTION_DAYS)
    minute_cutoff = now - timedelta(days=settings.MINUTE_ROLLUP_RETENTION_DAYS)
    rollup_cutoff = now - timedelta(days=settings.ROLLUP_RETENTION_DAYS)
    if partitions.partitioned():
        logs = partitions.partitions_drop_before(log_cutoff, dry_run=dry_run)
    else:
        old_logs = RequestLog.objects.filter(id__lt=RequestLog.id_floor(log_cutoff))
        logs = _delete_in_batches(old_logs, dry_run=dry_run)
    plan = {
        "IP records": IpDay.objects.filter(day__lt=log_cutoff.date()),
        "minute rollups": UsageMinute.objects.filter(bucket__lt=minute_cutoff),
        "platform minutes": PlatformMinute.objects.filter(bucket__lt=minute_cutoff),
        "channel minutes": ChannelMinute.objects.filter(bucket__lt=minute_cutoff),
        "hour rollups": UsageHour.objects.filter(bucket__lt=rollup_cutoff),
        "day rollups": UsageDay.objects.filter(bucket__lt=rollup_cutoff.date()),
    }
    return {"request logs": logs} | {
        name: _delete_in_batches(rows, dry_run=dry_run) for name, rows in plan.items()
    }
