"""The SQLite connections, and how every call reaches them.

sqlite3 blocks, so the connection lives in a thread of its own that runs the
calls queued for it one after the other (scepd/store/thread.py says why, and
what happens to a cancelled call).

A second, read-only connection on a thread of its own serves the reads that
need not be ordered with this process's writes (the gauges a scrape
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

from scepd.episodes import Episode
from scepd.store.base import StoreError
from scepd.store.faults import FaultState
from scepd.store.sqlite.migrations import migrate
from scepd.store.thread import ConnectionThread

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


def _open(path: Path, setup: Callable[[sqlite3.Connection], object]) -> sqlite3.Connection:
    """A connection with the settings both kinds share, then `setup`; closed again if that fails."""
    # isolation_level=None: no implicit transactions; `transaction` says where they start and end.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        setup(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def connect(path: Path) -> sqlite3.Connection:
    """Open the file in WAL mode and bring its schema up to date (blocking: run it in a thread)."""

    def writer(conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: could not switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        transaction(conn, migrate)

    return _open(path, writer)


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection to a file `connect` has opened (and so put in WAL mode and migrated)."""
    return _open(path, lambda conn: conn.execute("PRAGMA query_only = ON"))


def connect_both(path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """The writer (`connect`) and the reader beside it (blocking: run it in a thread)."""
    conn = connect(path)
    try:
        return conn, connect_reader(path)
    except BaseException:
        conn.close()
        raise


def _close(conn: sqlite3.Connection) -> None:
    conn.close()


class Database:
    """The write connection's thread, the read-only connection's thread, and the store's fault state."""

    def __init__(self, conn: sqlite3.Connection, reader: sqlite3.Connection, path: Path) -> None:
        self._writer: ConnectionThread[sqlite3.Connection] | None = ConnectionThread(conn, "scepd-store", _close)
        self._reader: ConnectionThread[sqlite3.Connection] | None = ConnectionThread(
            reader, "scepd-store-reader", _close
        )
        self.path = path
        self._faults = FaultState(Episode(_log, "store_fault", path=str(path)))

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
        return self._faults.fault

    @property
    def last_commit(self) -> float | None:
        """When (`trio.current_time()`) a write last committed a change; None until then and after any fault."""
        return self._faults.last_commit

    async def close(self) -> None:
        threads = (self._reader, self._writer)  # the writer last: it folds the WAL back into the file
        self._reader = self._writer = None
        with trio.CancelScope(shield=True):
            for thread in threads:
                if thread is not None:
                    await thread.stop()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(conn)` on the write connection's thread, after the calls queued before it."""
        thread = self._writer
        if thread is None:
            raise StoreError("the store is closed", "closed")

        def counted(conn: sqlite3.Connection) -> tuple[T, bool]:
            changes = conn.total_changes
            return work(conn), conn.total_changes != changes

        try:
            result, wrote = await thread.call(counted)
        except sqlite3.Error as e:
            raise self._faults.failed(store_error(e)) from e
        if wrote:
            self._faults.committed()
        return result

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(conn)` on the read-only connection: it sees every committed write and waits for none."""
        thread = self._reader
        if thread is None:
            raise StoreError("the store is closed", "closed")
        try:
            return await thread.call(work)
        except sqlite3.Error as e:
            raise self._faults.failed(store_error(e)) from e

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`run` with `work` in one write transaction."""
        return await self.run(lambda conn: transaction(conn, work))

    async def execute(self, sql: str, args: tuple[Any, ...] | list[Any]) -> int:
        """One statement in its own write transaction; the number of rows it changed."""
        return await self.write(lambda conn: conn.execute(sql, args).rowcount)


class OnDatabase:
    """Base of the role classes: each implements one role protocol on the shared `Database`."""

    def __init__(self, database: Database) -> None:
        self.database = database
