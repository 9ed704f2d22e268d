"""Enqueueing Celery tasks from a request."""

import logging

from django.db import transaction

log = logging.getLogger(__name__)


def enqueue_on_commit(task, *args, **kwargs):
    """Queues `task` once the current transaction commits, never failing the request for it.

    The data the user saved is committed by then; a broker outage (or, with eager Celery, a
    failing task) is logged rather than turned into an error page for a change that happened.
    """

    def enqueue():
        try:
            task.delay(*args, **kwargs)
        except Exception:
            log.exception("Could not run or queue %s%r", getattr(task, "name", task), args)

    transaction.on_commit(enqueue)
