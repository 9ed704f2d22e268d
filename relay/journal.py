"""The gateway's journal: every answered request is on disk before its answer completes.

A gateway process writes log rows and settles money once a second (logs.writer). Until then,
what it answered lives in its memory, and a process that dies (SIGKILL, the OOM killer, a
crash) would take it along: requests answered but never logged or charged. So each process
appends the record of every request to a journal file of its own before the last byte of the
answer goes out: one write() to a file opened for appending, a few microseconds. The data is
then in the kernel's page cache, which outlives the process (not the machine: see README).

Each flush starts a new segment file, and the segments before it are deleted once the flush is
in the database. A process holds an exclusive lock (flock) on its lock file while it lives; the
kernel lets go of it when the process dies, however it dies. Any gateway process of the machine
then finds the journal orphaned, writes what it holds (each row once: a row that exists was
charged when it was written, see logs.writer.write_each) and releases the dead process's holds.
Journals hold what a log row holds, never request or response content.
"""

import ast
import fcntl
import json
import logging
import operator
import os
import re
import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from django.db import DatabaseError

from billing.holds import holds_of
from billing.pricing import PART_MULTIPLIERS
from logs.models import RequestLog
from logs.writer import Part, RequestRecord, parts_of, refusals_report, write_each

log = logging.getLogger(__name__)

FIELDS = [f.name for f in fields(RequestRecord)]
DECIMALS = {"model_multiplier", "completion_multiplier", "line_multiplier", *PART_MULTIPLIERS}
# Fields renamed since journals were first written, old name → new: a journal left by a crash
# may be replayed by the next version. (Lines were called groups.)
RENAMED = {"group_id": "line_id", "group_multiplier": "line_multiplier"}
VERSION = 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
KNOWN = frozenset(FIELDS)
_values = operator.attrgetter(*FIELDS)
_DECIMAL_AT = [FIELDS.index(name) for name in DECIMALS]


def encode(record: RequestRecord) -> bytes:
    """A record as one line: the Python literal of its values in FIELDS order (id in hex, time
    in microseconds since 1970, multipliers as text). On the hot path, so the cheapest safe
    form: about 3 µs, where JSON takes twice that. A literal never spans lines."""
    values = list(_values(record))
    values[0] = values[0].hex  # id
    values[1] = (values[1] - EPOCH) // MICROSECOND  # created_at
    for at in _DECIMAL_AT:
        values[at] = str(values[at])
    return repr(values).encode() + b"\n"


def decode(line: bytes, names: list[str]) -> RequestRecord:
    names = [RENAMED.get(name, name) for name in names]
    values = dict(zip(names, ast.literal_eval(line.decode()), strict=True))
    # A journal written by a newer version may carry fields this one does not know.
    values = {name: value for name, value in values.items() if name in KNOWN}
    values["id"] = uuid.UUID(values["id"])
    values["created_at"] = EPOCH + values["created_at"] * MICROSECOND
    for name in DECIMALS:
        if name in values:  # a journal of an earlier version may lack the newer ones
            values[name] = Decimal(values[name])
    return RequestRecord(**values)


def _write_all(fd: int, data: bytes) -> None:
    """A write of a full disk may be short: the rest goes after it, or it raises."""
    while data:
        data = data[os.write(fd, data) :]


def _file_name(owner: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", owner)


class Journal:
    """The journal of one gateway process. Used from its event loop; `sync_sealed` from its
    flush thread."""

    # From open(): the lock file's descriptor, and the current segment's.
    lock_fd: int
    fd: int
    path: Path

    def __init__(self, directory: str | Path, owner: str) -> None:
        self.directory = Path(directory)
        self.owner = owner
        self.name = _file_name(owner)
        self.sequence = 0
        self.sealed: list[Path] = []

    def open(self) -> "Journal":
        self.directory.mkdir(parents=True, exist_ok=True)
        # Locked under a name of its own, then renamed: no replayer can take a lock file that
        # its process has not locked yet.
        unlocked = self.directory / f"{self.name}.lock.new"
        self.lock_fd = os.open(unlocked, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(unlocked, self.directory / f"{self.name}.lock")
        self.fd, self.path = self._new_segment()
        return self

    def _new_segment(self) -> tuple[int, Path]:
        path = self.directory / f"{self.name}.{self.sequence + 1:08d}.journal"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            header = {"journal": VERSION, "owner": self.owner, "fields": FIELDS}
            _write_all(fd, json.dumps(header).encode() + b"\n")
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self.sequence += 1
        return fd, path

    def write(self, record: RequestRecord) -> None:
        _write_all(self.fd, encode(record))

    def write_many(self, records: list[RequestRecord]) -> None:
        if records:
            _write_all(self.fd, b"".join(encode(r) for r in records))

    def seal(self) -> None:
        """Starts a new segment: what is written from now on is not in the sealed ones. If the
        new one cannot be made, nothing changes (and OSError says why)."""
        fd, path = self._new_segment()
        os.close(self.fd)
        self.sealed.append(self.path)
        self.fd, self.path = fd, path

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def sync_sealed(self) -> None:
        """On disk, not only in the page cache: what they hold is not in the database yet."""
        for path in self.sealed:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    def drop_sealed(self) -> None:
        """The sealed segments are in the database, or copied into the current one."""
        for path in self.sealed:
            path.unlink(missing_ok=True)
        self.sealed = []

    def close(self, *, settled: bool) -> None:
        """Closes the journal; deletes it when everything it holds is settled. Otherwise it stays
        for the next process to replay."""
        os.close(self.fd)
        if settled:
            self.drop_sealed()
            self.path.unlink(missing_ok=True)
            (self.directory / f"{self.name}.lock").unlink(missing_ok=True)
        os.close(self.lock_fd)


class Orphan:
    """The journal of a gateway process that is gone, locked while it is replayed."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.lock_path = directory / f"{name}.lock"
        self.lock_fd: int | None = None
        self.owner: str | None = None  # known once a segment is read

    def __enter__(self) -> "Orphan | None":
        """Takes the dead process's lock; None if it is alive or another process replays it."""
        try:
            self.lock_fd = os.open(self.lock_path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        if os.fstat(self.lock_fd).st_nlink == 0:  # replayed and removed while we waited
            return None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob(f"{self.name}.*.journal"))

    def records(self) -> list[RequestRecord]:
        """Every record in its segments, once each (a record may sit in two of them)."""
        found = {}
        for path in self.segments():
            with path.open("rb") as segment:
                header = segment.readline()
                try:
                    head = json.loads(header)
                except ValueError:
                    continue  # the process died while starting this segment
                self.owner = head["owner"]
                for number, line in enumerate(segment, start=2):
                    if not line.endswith(b"\n"):
                        break  # the process died in the middle of this write
                    try:
                        record = decode(line, head["fields"])
                    except (ValueError, SyntaxError, TypeError, KeyError):
                        log.error("Unreadable line %s of journal %s, left out", number, path)
                        continue
                    found[record.id] = record
        return list(found.values())

    def keep_only(self, records: list[RequestRecord], *, owner: str) -> None:
        """Rewrites the journal of `owner` with just `records` (those still refused)."""
        journal = Journal(self.directory, owner)
        journal.name = self.name
        old = self.segments()
        journal.sequence = max((int(p.suffixes[-2][1:]) for p in old), default=0)
        journal.fd, journal.path = journal._new_segment()
        journal.write_many(records)
        journal.sync()
        os.close(journal.fd)
        for path in old:
            path.unlink()

    def remove(self) -> None:
        for path in self.segments():
            path.unlink()
        self.lock_path.unlink(missing_ok=True)


def replay_orphans(directory: str | Path, *, skip: str = "", dry_run: bool = False) -> int:
    """Writes and charges what dead gateway processes left in the journals of `directory`, and
    releases their holds. Safe to run from several processes at once. Returns the number of
    request records written (with `dry_run`, that would be: nothing is written)."""
    directory = Path(directory)
    written = 0
    for lock in sorted(directory.glob("*.lock")) if directory.is_dir() else []:
        name = lock.name.removesuffix(".lock")
        if name == skip:
            continue
        with Orphan(directory, name) as orphan:
            if orphan is None:
                continue
            if dry_run:
                ids = [str(r.id) for r in orphan.records()]
                written += len(ids) - RequestLog.objects.filter(id__in=ids).count()
                continue
            try:
                written += _replay(orphan)
            except DatabaseError:
                raise  # the database is away: the next scan tries again
            except Exception:
                log.exception("Could not replay the journal %s; the others go on", name)
    return written


def _replay(orphan: Orphan) -> int:
    records = orphan.records()
    owner = orphan.owner
    if owner is None:  # no readable segment: nothing was answered
        orphan.remove()
        return 0
    parts = parts_of(records)
    for user_id in holds_of(owner):
        parts.setdefault(user_id, Part(user_id))
    outcome = write_each(list(parts.values()), owner=owner, release_all=True)
    refusals_report(outcome, owner=owner, retried=outcome.written)
    left = [r for part, _error in outcome.refused.values() for r in part.records]
    left += [r for part in outcome.unsent for r in part.records]
    if left or outcome.unsent:
        orphan.keep_only(left, owner=owner)
    else:
        orphan.remove()
    done = len(records) - len(left)
    log.warning(
        "Replayed the journal of gateway process %s, which stopped without settling: "
        "%s request records settled, %s kept for a retry",
        owner,
        done,
        len(left),
    )
    return done
