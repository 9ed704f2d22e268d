"""Retention: raw logs and IP records after LOG_RETENTION_DAYS, rollups after longer.

Old rows go in small batches, each its own short transaction, so that the log table is never
locked for long while the gateway writes to it. Log ids are time-ordered (UUIDv7), so "older
than the cutoff" is a range of the primary key: each batch is an index range scan. (Time
partitions dropped whole would be cheaper still on PostgreSQL, at the price of partition
management; batches of primary-key ranges keep one schema for PostgreSQL and SQLite.)
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

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
    plan = {
        "request logs": RequestLog.objects.filter(id__lt=RequestLog.id_floor(log_cutoff)),
        "IP records": IpDay.objects.filter(day__lt=log_cutoff.date()),
        "minute rollups": UsageMinute.objects.filter(bucket__lt=minute_cutoff),
        "platform minutes": PlatformMinute.objects.filter(bucket__lt=minute_cutoff),
        "channel minutes": ChannelMinute.objects.filter(bucket__lt=minute_cutoff),
        "hour rollups": UsageHour.objects.filter(bucket__lt=rollup_cutoff),
        "day rollups": UsageDay.objects.filter(bucket__lt=rollup_cutoff.date()),
    }
    return {name: _delete_in_batches(rows, dry_run=dry_run) for name, rows in plan.items()}
