from celery import shared_task

from logs.retention import prune


@shared_task
def prune_logs():
    return prune()
