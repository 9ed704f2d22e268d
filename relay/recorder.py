"""Request records on their way from an answer to the database, for one gateway process.

Each record goes to the journal (relay.journal) as the answer completes, and to memory; once a
second `flush` writes the records and the lease money given back (logs.writer.write_flush).
What the database refuses for one account is set aside, shown to staff (UnsettledUsage) and
tried again after a pause that grows with each refusal, never dropped. What it could not take
because it was away is tried again at the next flush. The journal keeps everything not yet in
the database, so that a process that dies loses nothing: the next gateway process of the
machine replays it (`replay_orphans`).
"""

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections

from billing.holds import Settlement, holds_refresh
from console.lib import metrics
from logs.writer import Outcome as FlushOutcome
from logs.writer import (
    Part,
    RequestRecord,
    parts_of,
    refusals_report,
    usage_fold,
    write_each,
    write_flush,
)
from relay.database import DatabaseThreads
from relay.journal import Journal, replay_orphans

log = logging.getLogger(__name__)

# Journals of dead processes are looked for this often, and at start.
ORPHAN_SCAN_SECONDS = 5.0
# A refused account's usage is tried again after 2, 4, 8 … seconds, at most this.
LONGEST_PAUSE = 30.0


@dataclass
class SetAside:
    """An account's usage the database refused: the pieces it is in, kept for a retry."""

    pieces: list[Part]
    error: str
    attempts: int
    next_try: float

    @property
    def records(self) -> list[RequestRecord]:
        return [r for piece in self.pieces for r in piece.records]


# Requests per flush below which the flush's usage is folded into the rollups at once.
FOLD_EACH_FLUSH_BELOW = 1000


class Recorder:
    flusher: DatabaseThreads  # the flush thread, from start()

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.records: list[RequestRecord] = []
        self.unsent: dict[int, Part] = {}  # user id → Part the database could not take (away)
        self.set_aside: dict[int, SetAside] = {}
        self.waiting = 0  # records in unsent
        self.waiting_of: dict[int, int] = {}  # user id → records set aside
        self.journal: Journal | None = None
        self.scanned_at = 0.0
        self.journal_failed_at: float | None = None
        self.folded_at: float | None = None  # the first flush folds

    def start(self) -> None:
        self.flusher = DatabaseThreads(1, "gateway-flush")
        if settings.GATEWAY_JOURNAL:
            self.journal = Journal(settings.GATEWAY_JOURNAL_DIR, self.owner).open()

    async def stop(self) -> None:
        """Closes the journal (kept if anything is still unsettled) and the flush thread."""
        if self.journal is not None:
            self.journal.close(settled=not (self.records or self.unsent or self.set_aside))
            self.journal = None
        await self.flusher.run(close_old_connections)
        self.flusher.shutdown()

    @property
    def backlog(self) -> int:
        """Records not in the database yet, but for those of accounts set aside."""
        return len(self.records) + self.waiting

    def add(self, record: RequestRecord) -> None:
        """A request's record, before the last byte of its answer goes out."""
        self.records.append(record)
        if self.journal is None:
            return
        try:
            self.journal.write(record)
        except OSError:
            # The disk is full or gone: answers go on (they are charged from memory), but a
            # process killed now would lose them. Said loudly, at most once a minute.
            self._journal_failed()

    def _journal_failed(self) -> None:
        now = time.monotonic()
        if self.journal_failed_at is None or now - self.journal_failed_at > 60:
            self.journal_failed_at = now
            directory = self.journal.directory if self.journal else settings.GATEWAY_JOURNAL_DIR
            log.exception("Cannot write the gateway journal in %s", directory)

    async def flush(self, settlement: Settlement, *, final: bool = False) -> FlushOutcome:
        """Writes what was recorded and given back since the last flush, with what waits for
        another try; at `final`, everything, and every hold is released. Returns the Outcome
        (its lost leases are for the hold book to forget)."""
        sealed = self._seal()  # first: what is taken below is in the sealed segments
        served = self.records
        parts = parts_of(served, settlement)
        self.records = []
        for user_id, part in self.unsent.items():
            parts[user_id] = part.merge(parts[user_id]) if user_id in parts else part
        self.unsent = {}
        # An account set aside waits as a whole: its new rows join it as a piece of their own.
        for user_id, waiting in self.set_aside.items():
            if user_id in parts:
                waiting.pieces.append(parts.pop(user_id))
        now = time.monotonic()
        due = [u for u, waiting in self.set_aside.items() if final or waiting.next_try <= now]
        retry = {user_id: self.set_aside.pop(user_id) for user_id in due}
        try:
            outcome = await self.flusher.run(
                self._write, parts=list(parts.values()), retry=retry, final=final, served=served
            )
        except Exception:
            metrics.gateway_flush_failed()
            self.unsent = parts
            self.set_aside.update(retry)
            self._count_waiting()
            if self.journal is not None:  # the database is away: the journal is all there is
                await self.flusher.run(self.journal.sync_sealed)
            raise
        self._keep(outcome, retry)
        if sealed:
            await self.flusher.run(self._journal_settled, kept=self._kept())
        return outcome

    def _seal(self) -> bool:
        if self.journal is None:
            return False
        try:
            self.journal.seal()
        except OSError:
            self._journal_failed()  # then the current segment keeps growing; nothing is lost
            return False
        return True

    def _write(
        self,
        parts: list[Part],
        retry: dict[int, SetAside],
        final: bool,
        served: list[RequestRecord],
    ) -> FlushOutcome:
        """In the flush thread: the requests `served` since the last flush counted for the
        metrics; the set-aside parts each alone, the fresh ones together; then the holds kept
        alive and the refusals shown to staff. Raises only if the database is away before
        anything was written."""
        metrics.requests_served(served)
        started = time.perf_counter()
        outcome = FlushOutcome()
        if retry:
            pieces = [piece for waiting in retry.values() for piece in waiting.pieces]
            errors = {user_id: waiting.error for user_id, waiting in retry.items()}
            outcome = write_each(pieces, owner=self.owner, release_all=final, errors=errors)
        if parts or final:
            # At the end, what is still refused keeps its holds, for the next process.
            fresh = write_flush(parts, owner=self.owner, release_all=final, keep=outcome.refused)
            outcome.add(fresh)
        metrics.gateway_flushed(parts, outcome.written, seconds=time.perf_counter() - started)
        # What is above is committed: a failure below must not have it written again.
        try:
            if not final:
                holds_refresh(owner=self.owner)
            refusals_report(outcome, owner=self.owner, retried=list(retry))
        except Exception:
            log.exception("Could not keep the holds alive or report refused usage")
        now = time.monotonic()
        due = self.folded_at is None or now - self.folded_at >= settings.USAGE_FOLD_SECONDS
        # A quiet process folds each flush that wrote anything, cheaply: one request shows on
        # the dashboard as soon as it is written. A busy one folds a key's many flushes at once;
        # an idle one leaves the table alone but every USAGE_FOLD_SECONDS.
        quiet = bool(outcome.written) and len(served) < FOLD_EACH_FLUSH_BELOW
        if final or due or quiet:
            self.folded_at = now
            try:
                folding = time.perf_counter()
                folded = usage_fold()
                metrics.usage_folded(folded, seconds=time.perf_counter() - folding)
            except Exception:  # the pending usage waits for the next fold, nothing is lost
                log.exception("Could not add the pending usage up into the rollups")
        return outcome

    def _keep(self, outcome: FlushOutcome, retried: dict[int, SetAside]) -> None:
        for part in outcome.unsent:
            earlier = self.unsent.get(part.user_id)
            self.unsent[part.user_id] = earlier.merge(part) if earlier else part
        now = time.monotonic()
        for user_id, (pieces, error) in outcome.refused.items():
            attempts = retried[user_id].attempts + 1 if user_id in retried else 1
            pause = min(2.0**attempts, LONGEST_PAUSE)
            self.set_aside[user_id] = SetAside(pieces, error, attempts, now + pause)
        self._count_waiting()

    def _count_waiting(self) -> None:
        self.waiting = sum(len(p.records) for p in self.unsent.values())
        self.waiting_of = {u: len(w.records) for u, w in self.set_aside.items()}
        metrics.gateway_backlog(waiting=self.backlog, set_aside=sum(self.waiting_of.values()))

    def _kept(self) -> list[RequestRecord]:
        kept = [r for part in self.unsent.values() for r in part.records]
        return kept + [r for waiting in self.set_aside.values() for r in waiting.records]

    def _journal_settled(self, kept: list[RequestRecord]) -> None:
        """In the flush thread: the sealed segments hold nothing that is not in the database
        or `kept` in memory; what memory keeps is written again to the current segment first."""
        journal = self.journal
        if journal is None:
            return
        if kept:
            journal.write_many(kept)
            journal.sync()
        journal.drop_sealed()

    async def replay_orphans(self, *, force: bool = False) -> int:
        """Settles the journals of dead processes of this machine, every few seconds."""
        now = time.monotonic()
        scan_now = force or now - self.scanned_at >= ORPHAN_SCAN_SECONDS
        if not settings.GATEWAY_JOURNAL or not scan_now:
            return 0
        self.scanned_at = now
        skip = self.journal.name if self.journal else ""
        return await self.flusher.run(
            replay_orphans, directory=settings.GATEWAY_JOURNAL_DIR, skip=skip
        )
