"""Enqueueing Celery tasks from a request."""

import logging

from celery import current_app
from django.db import transaction

log = logging.getLogger(__name__)


def enqueue_on_commit(task, *args, **kwargs):
    """Queues `task` once the current transaction commits, never failing the request for it.

    `task` is a Celery task, or its name ("billing.tasks.send_low_balance_alert") where the
    module queueing it cannot import it: the task's module imports the caller's.

    The data the user saved is committed by then; a broker outage (or, with eager Celery, a
    failing task) is logged rather than turned into an error page for a change that happened.
    """

    def enqueue():
        try:
            _task(task).delay(*args, **kwargs)
        except Exception:
            log.exception("Could not run or queue %s%r", getattr(task, "name", task), args)

    transaction.on_commit(enqueue)


def _task(task):
    if not isinstance(task, str):
        return task
    if task not in current_app.tasks:
        # The installed apps' tasks modules, as a worker loads them when it starts.
        current_app.loader.import_default_modules()
    return current_app.tasks[task]
