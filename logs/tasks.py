from celery import shared_task

from logs.partitions import partitions_make
from logs.retention import prune
from logs.writer import usage_fold


@shared_task
def prune_logs():
    return prune()


@shared_task
def make_log_partitions():
    """The request log's partitions of the coming days (PostgreSQL; nothing elsewhere)."""
    return [name for name, _moved in partitions_make()]


@shared_task
def fold_usage():
    """The pending usage a gateway process left when it stopped without folding it (killed):
    the running ones fold every few seconds."""
    return usage_fold()
