"""Request records on their way from an answer to the database, for one gateway process.

Each record goes to the journal (relay.journal) as the answer completes, and to memory; once a
second `flush` writes the records and the lease money given back (logs.writer.write_flush).
What the database refuses for one account is set aside, shown to staff (UnsettledUsage) and
tried again after a pause that grows with each refusal, never dropped. What it could not take
because it was away is tried again at the next flush. The journal keeps everything not yet in
the database, so that a process that dies loses nothing: the next gateway process of the
machine replays it (`replay_orphans`).
"""

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections

from logs.writer import Outcome, parts_of, refusals_report, write_each, write_flush
from relay.journal import Journal, replay_orphans

log = logging.getLogger(__name__)

# Journals of dead processes are looked for this often, and at start.
ORPHAN_SCAN_SECONDS = 5.0
# A refused account's usage is tried again after 2, 4, 8 … seconds, at most this.
LONGEST_PAUSE = 30.0


@dataclass
class SetAside:
    part: object
    error: str
    attempts: int
    next_try: float


class Recorder:
    def __init__(self, owner):
        self.owner = owner
        self.records = []
        self.unsent = {}  # user id → Part the database could not take (it was away)
        self.set_aside = {}  # user id → SetAside: parts the database refused
        self.waiting = 0  # records in unsent and set_aside
        self.journal = None
        self.flusher = None
        self.scanned_at = 0.0
        self.journal_failed_at = None

    def start(self):
        self.flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-flush")
        if settings.GATEWAY_JOURNAL:
            self.journal = Journal(settings.GATEWAY_JOURNAL_DIR, self.owner).open()

    async def stop(self):
        """Closes the journal (kept if anything is still unsettled) and the flush thread."""
        if self.journal is not None:
            self.journal.close(settled=not (self.records or self.unsent or self.set_aside))
            self.journal = None
        await self._in_thread(close_old_connections)
        self.flusher.shutdown(wait=True)

    @property
    def backlog(self):
        return len(self.records) + self.waiting

    def add(self, record):
        """A request's record, before the last byte of its answer goes out."""
        self.records.append(record)
        if self.journal is None:
            return
        try:
            self.journal.write(record)
        except OSError:
            # The disk is full or gone: answers go on (they are charged from memory), but a
            # process killed now would lose them. Said loudly, at most once a minute.
            now = time.monotonic()
            if self.journal_failed_at is None or now - self.journal_failed_at > 60:
                self.journal_failed_at = now
                log.exception("Cannot write the gateway journal in %s", self.journal.directory)

    async def _in_thread(self, function, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.flusher, functools.partial(in_db, function, kwargs))

    async def flush(self, settlement, *, final=False):
        """Writes what was recorded and given back since the last flush, with what waits for
        another try. Returns the Outcome (its lost leases are for the hold book to forget)."""
        parts = parts_of(self.records, settlement)
        self.records = []
        for user_id, part in self.unsent.items():
            parts[user_id] = part.merge(parts[user_id]) if user_id in parts else part
        self.unsent = {}
        # An account set aside waits as a whole: its new rows join it, and go with its retry.
        for user_id, waiting in self.set_aside.items():
            if user_id in parts:
                waiting.part.merge(parts.pop(user_id))
        now = time.monotonic()
        due = [u for u, waiting in self.set_aside.items() if final or waiting.next_try <= now]
        retry = {user_id: self.set_aside.pop(user_id) for user_id in due}
        if not parts and not retry:
            self._count_waiting()
            return Outcome()
        if self.journal is not None:
            self.journal.seal()
        try:
            outcome = await self._in_thread(
                self._write, parts=list(parts.values()), retry=[w.part for w in retry.values()]
            )
        except Exception:
            self.unsent = parts
            self.set_aside.update(retry)
            self._count_waiting()
            if self.journal is not None:  # the database is away: the journal is all there is
                await asyncio.get_running_loop().run_in_executor(
                    self.flusher, self.journal.sync_sealed
                )
            raise
        self._keep(outcome, retry)
        self._journal_settled()
        return outcome

    def _write(self, parts, retry):
        """In the flush thread: the fresh parts together, the set-aside ones each alone."""
        outcome = write_flush(parts, owner=self.owner) if parts else Outcome()
        if retry:
            again = write_each(retry, owner=self.owner)
            outcome.written += again.written
            outcome.refused.update(again.refused)  # no account is in both
            outcome.unsent += again.unsent
            outcome.lost_users += again.lost_users
            outcome.lost_tokens += again.lost_tokens
        refusals_report(outcome, owner=self.owner, retried=[part.user_id for part in retry])
        return outcome

    def _keep(self, outcome, retried):
        for part in outcome.unsent:
            earlier = self.unsent.get(part.user_id)
            self.unsent[part.user_id] = earlier.merge(part) if earlier else part
        now = time.monotonic()
        for user_id, (part, error) in outcome.refused.items():
            attempts = retried[user_id].attempts + 1 if user_id in retried else 1
            pause = min(2.0**attempts, LONGEST_PAUSE)
            self.set_aside[user_id] = SetAside(part, error, attempts, now + pause)
        self._count_waiting()

    def _count_waiting(self):
        self.waiting = sum(len(p.records) for p in self.unsent.values()) + sum(
            len(w.part.records) for w in self.set_aside.values()
        )

    def _journal_settled(self):
        """The sealed segments hold nothing that is not in the database or kept in memory;
        what memory keeps is written again to the current segment first."""
        if self.journal is None:
            return
        kept = [r for part in self.unsent.values() for r in part.records]
        kept += [r for waiting in self.set_aside.values() for r in waiting.part.records]
        if kept:
            self.journal.write_many(kept)
            self.journal.sync()
        self.journal.drop_sealed()

    async def replay_orphans(self, *, force=False):
        """Settles the journals of dead processes of this machine, every few seconds."""
        now = time.monotonic()
        if not settings.GATEWAY_JOURNAL or (
            not force and now - self.scanned_at < ORPHAN_SCAN_SECONDS
        ):
            return 0
        self.scanned_at = now
        skip = self.journal.name if self.journal else ""
        return await self._in_thread(
            replay_orphans, directory=settings.GATEWAY_JOURNAL_DIR, skip=skip
        )


def in_db(function, kwargs):
    """Runs `function(**kwargs)` in a database thread, on a fresh connection if needed."""
    close_old_connections()
    try:
        return function(**kwargs)
    finally:
        close_old_connections()
