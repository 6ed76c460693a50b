"""The one SQLite connection, and how every call reaches it.

sqlite3 blocks, so every call runs in a worker thread; one connection is
shared and a `CapacityLimiter(1)` makes sure only one thread uses it at a
time. Calls are never abandoned on cancellation: the thread finishes (and
commits or rolls back) before the limiter is released, so a cancelled request
cannot leave a transaction half-open for the next one.

A second, read-only connection with a limiter of its own serves the reads
that need not be ordered with this process's writes (the gauges a scrape
refreshes): in WAL mode a reader sees every committed write and never waits
for a writer, so a scrape does not queue behind enrollments' commits and
their fsyncs.

`synchronous=FULL` because a certificate that reached a client must survive a
power cut; WAL keeps readers from waiting on that fsync. `busy_timeout` lets a
second process (`scepd challenge mint` beside the daemon) wait its turn.

sqlite3's exceptions stop here: callers see `StoreError` with a kind, and a
fault episode is logged once and counted on every failure.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from scepd import metrics
from scepd.episodes import Episode
from scepd.store.base import StoreError
from scepd.store.sqlite.migrations import migrate

T = TypeVar("T")
_log = logging.getLogger("scepd.store")

# SQLite's extended result code names (sqlite3.Error.sqlite_errorname) by prefix -> StoreError.kind.
_FAULT_KINDS = (
    ("SQLITE_FULL", "full"),
    ("SQLITE_READONLY", "readonly"),
    ("SQLITE_IOERR", "io"),
    ("SQLITE_BUSY", "locked"),
    ("SQLITE_LOCKED", "locked"),
    ("SQLITE_CORRUPT", "corrupt"),
    ("SQLITE_NOTADB", "corrupt"),
    ("SQLITE_CANTOPEN", "cantopen"),
    ("SQLITE_CONSTRAINT", "constraint"),
)


def store_error(e: sqlite3.Error, context: str = "") -> StoreError:
    """sqlite3's exception as a StoreError whose kind says what an operator must fix."""
    name = getattr(e, "sqlite_errorname", None) or ""
    kind = next((k for prefix, k in _FAULT_KINDS if name.startswith(prefix)), "other")
    if isinstance(e, sqlite3.IntegrityError):
        kind = "constraint"
    text = f"{e} ({name})" if name else str(e)
    return StoreError(f"{context}: {text}" if context else text, kind)


def transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run `work` in one write transaction; commit, or roll back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        # Some errors (disk full, I/O) already rolled back; a second ROLLBACK would mask them.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def connect(path: Path) -> sqlite3.Connection:
    """Open the file in WAL mode and bring its schema up to date (blocking: run it in a thread)."""
    # isolation_level=None: no implicit transactions; `transaction` says where they start and end.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: could not switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        transaction(conn, migrate)
    except BaseException:
        conn.close()
        raise
    return conn


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection to a file `connect` has opened (and so put in WAL mode and migrated)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def connect_both(path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """The writer (`connect`) and the reader beside it (blocking: run it in a thread)."""
    conn = connect(path)
    try:
        return conn, connect_reader(path)
    except BaseException:
        conn.close()
        raise


class Database:
    """The shared connection behind a limiter, a read-only one beside it, and the store's fault state."""

    def __init__(self, conn: sqlite3.Connection, reader: sqlite3.Connection, path: Path) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._reader: sqlite3.Connection | None = reader
        self.path = path
        self._limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(1)
        self._episode = Episode(_log, "store_fault", path=str(path))
        self._fault: StoreError | None = None
        self._last_commit: float | None = None

    @classmethod
    async def open(cls, path: Path) -> Database:
        """Connect (creating and migrating as needed) in a worker thread; the caller must `close()`."""
        try:
            conn, reader = await trio.to_thread.run_sync(connect_both, path)
        except sqlite3.Error as e:
            raise store_error(e, str(path)) from e
        return cls(conn, reader, path)

    @property
    def fault(self) -> StoreError | None:
        """The last write error while writes fail; None once one commits again."""
        return self._fault

    @property
    def last_commit(self) -> float | None:
        """When (`trio.current_time()`) a write last committed a change; None until then and after any fault."""
        return self._last_commit

    async def close(self) -> None:
        async with self._limiter, self._read_limiter:
            for conn in (self._reader, self._conn):  # the writer last: it folds the WAL back into the file
                if conn is not None:
                    await trio.to_thread.run_sync(conn.close)
            self._conn = self._reader = None

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(conn)` in a worker thread with the connection to itself."""
        async with self._limiter:
            conn = self._conn
            if conn is None:
                raise StoreError("the store is closed", "closed")
            changes = conn.total_changes
            try:
                # The limiter is held by this task, so the thread has the connection to itself.
                result = await trio.to_thread.run_sync(work, conn)
            except sqlite3.Error as e:
                raise self._failed(store_error(e)) from e
            if conn.total_changes != changes:
                # A write committed: the fault is over (reads alone prove nothing; they work on a full disk).
                self._last_commit = trio.current_time()
                if self._fault is not None:
                    self._fault = None
                    self._episode.succeeded()
            return result

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(conn)` on the read-only connection: it sees every committed write and waits for none."""

        def on_reader() -> T:
            conn = self._reader  # read in the thread, under the limiter, so `close` cannot pull it away
            if conn is None:
                raise StoreError("the store is closed", "closed")
            return work(conn)

        try:
            # The limiter given to the thread call, not taken around it: one wait for the scheduler fewer.
            return await trio.to_thread.run_sync(on_reader, limiter=self._read_limiter)
        except sqlite3.Error as e:
            raise self._failed(store_error(e)) from e

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`run` with `work` in one write transaction."""
        return await self.run(lambda conn: transaction(conn, work))

    async def execute(self, sql: str, args: tuple[Any, ...] | list[Any]) -> int:
        """One statement in its own write transaction; the number of rows it changed."""
        return await self.write(lambda conn: conn.execute(sql, args).rowcount)

    def _failed(self, error: StoreError) -> StoreError:
        """Count every store error; log a fault once per episode (the caller answers 503, no traceback)."""
        metrics.STORE_ERRORS.labels(error.kind).inc()
        if error.kind != "constraint":
            self._fault, self._last_commit = error, None
            self._episode.failed(error.kind, str(error))
        return error


class OnDatabase:
    """Base of the role classes: each implements one role protocol on the shared `Database`."""

    def __init__(self, database: Database) -> None:
        self.database = database
