"""The gateway's database threads. Django's ORM is synchronous and the gateway is not: a
database function runs in a thread of a small pool of its own, never in the event loop."""

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections


def in_db[**P, R](function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Runs `function` in a database thread, on a fresh connection if needed."""
    close_old_connections()
    try:
        return function(*args, **kwargs)
    finally:
        close_old_connections()


class DatabaseThreads:
    def __init__(self, workers: int, name: str) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run[**P, R](
        self, function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Awaits `function(*args, **kwargs)` run in one of these threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.pool, functools.partial(in_db, function, *args, **kwargs)
        )

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)
