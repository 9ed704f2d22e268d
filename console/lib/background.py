"""Enqueueing Celery tasks from a request, and running the periodic ones without a broker."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.db import close_old_connections, transaction

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


class PeriodicJobs:
    """The beat schedule, run inside this process: for an installation without a broker.

    Celery beat hands its jobs to a worker through the broker. Without one (the embedded
    default: no REDIS_URL, Celery runs tasks eagerly) there is neither beat nor worker, so the
    ASGI process runs each entry of CELERY_BEAT_SCHEDULE itself, every `schedule` seconds: in a
    thread of its own, so that the event loop never waits for a job; one run of an entry at a
    time; a failing run logged, and the next one on time all the same.
    """

    def __init__(self, app, schedule):
        self.app = app
        self.schedule = schedule
        self.loops = []
        self.pool = None

    def start(self):
        # The web process imports only the tasks it enqueues: bring in every app's tasks.py.
        self.app.autodiscover_tasks(force=True)
        jobs = [
            (name, self.app.tasks[entry["task"]], _seconds(entry["schedule"]))
            for name, entry in self.schedule.items()
        ]
        self.pool = ThreadPoolExecutor(max_workers=max(len(jobs), 1), thread_name_prefix="periodic")
        self.loops = [asyncio.create_task(self._every(*job)) for job in jobs]
        log.info("Running %d periodic jobs in this process (no Celery beat)", len(jobs))

    async def stop(self):
        """Stops scheduling; a job that is running finishes first (the pool waits for it)."""
        for loop in self.loops:
            loop.cancel()
        await asyncio.gather(*self.loops, return_exceptions=True)
        self.loops = []
        if self.pool is not None:
            await asyncio.to_thread(self.pool.shutdown)
            self.pool = None

    async def _every(self, name, task, seconds):
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(seconds)
            await loop.run_in_executor(self.pool, _run, name, task)


def _seconds(schedule):
    """An entry's interval: seconds, a timedelta, or Celery's `schedule(run_every=…)`."""
    every = getattr(schedule, "run_every", schedule)
    return every.total_seconds() if isinstance(every, timedelta) else float(every)


def _run(name, task):
    # As Django does around a request and Celery around a task: no connection outlives its age.
    close_old_connections()
    try:
        result = task()
        log.debug("Periodic job %s: %r", name, result)
    except Exception:
        log.exception("Periodic job %s failed; it runs again on schedule", name)
    finally:
        close_old_connections()
