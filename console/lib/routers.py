"""The read replica: the console's pages read request logs and usage rollups from it.

With DATABASE_REPLICA_URL set (console.settings), the pages that only show something (GET and
HEAD requests through Django's middleware: the dashboard, the request log and a request's
breakdown, the staff dashboard, the admin's lists) read the tables of the logs app from the
replica, a PostgreSQL standby that may be a moment behind. Everything else reads the primary:
every write; the other apps, whose rows decide money and access (balances, tokens, orders); a
streamed body such as the CSV export, read after the view has returned; and all reads outside
those pages, so that the gateway (which bypasses Django's middleware), the journal replay,
Celery tasks and management commands never act on a lagging copy. A POST that reads logs
before changing something reads them on the primary too.
"""

from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.utils.decorators import sync_and_async_middleware

REPLICA = "replica"
# The apps whose tables a page may show a moment late.
REPLICA_APPS = frozenset({"logs"})
SHOWING = frozenset({"GET", "HEAD"})

_showing_a_page = ContextVar("showing_a_page", default=False)


class ReplicaRouter:
    def db_for_read(self, model, **hints):
        if _showing_a_page.get() and model._meta.app_label in REPLICA_APPS:
            return REPLICA
        return "default"

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        # The replica is a copy of the primary: a row read there may name one read here.
        return {obj1._state.db, obj2._state.db} <= {"default", REPLICA}

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        # A standby follows the primary's schema by replication; it takes no migration.
        return db != REPLICA


@sync_and_async_middleware
def replica_reads(get_response):
    """Middleware: marks a request that only shows a page, for ReplicaRouter. Its effect ends
    with the view: a streamed body is read from the primary."""

    if iscoroutinefunction(get_response):

        async def middleware(request):
            mark = _showing_a_page.set(request.method in SHOWING)
            try:
                return await get_response(request)
            finally:
                _showing_a_page.reset(mark)

        return markcoroutinefunction(middleware)

    def middleware(request):
        mark = _showing_a_page.set(request.method in SHOWING)
        try:
            return get_response(request)
        finally:
            _showing_a_page.reset(mark)

    return middleware
