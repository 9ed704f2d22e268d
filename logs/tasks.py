from celery import shared_task

from logs.partitions import partitions_make
from logs.retention import prune


@shared_task
def prune_logs():
    return prune()


@shared_task
def make_log_partitions():
    """The request log's partitions of the coming days (PostgreSQL; nothing elsewhere)."""
    return [name for name, _moved in partitions_make()]
