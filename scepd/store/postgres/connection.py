"""The PostgreSQL connections, and how every call reaches them.

psycopg's sync connections block, so each lives in a `ConnectionThread`
(scepd/store/thread.py) the way SQLite's does: a write connection whose thread
runs this process's calls in order, and beside it a read-only one for the
counts a scrape reads (PostgreSQL readers never wait for writers, so a scrape
does not queue behind enrollments' commits).

Several processes and nodes write the same database at once. Each role's SQL
is written to be right under READ COMMITTED (a single conditional UPDATE, an
INSERT ... ON CONFLICT, a row lock, an advisory lock where a check and an
insert must be one step); a transaction that still fails with a serialization
failure (40001) or a deadlock (40P01) is run again from the start, a few
times, after a short jittered pause.

A connection is made again when it was lost. A call whose connection turned
out dead before it began (BEGIN failed: a server restart while idle) runs
again on a fresh connection; one that failed later is not retried, because
its COMMIT may or may not have happened: it raises `StoreError` and the
caller answers 503 (put_issued's `once` lets the client's retry find the
certificate if it did commit).

Every call is bounded in time, so that a database that stops answering makes
requests fail with a 503 instead of hanging them: `statement_timeout` (10 s
unless the URL's `options` set another) lets a live server cancel a slow
statement, and a call that is still not done a little after that (queueing
included) has its connection broken by the watchdog (watchdog.py), which also
covers a server that answers nothing at all. Why 10 s and not more: every
statement scepd runs takes milliseconds, so a statement still running after
seconds is a stuck lock or a stuck server, and a client told 503 and
Retry-After does better than one whose request is held for half a minute
(the SQLite store gives up on a lock after 5 s).

psycopg's exceptions stop here: callers see `StoreError` with a kind taken
from the SQLSTATE, and a fault episode is logged once and counted every time.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import trio
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row

from scepd.episodes import Backoff, Episode
from scepd.logs import event
from scepd.store.base import StoreError
from scepd.store.faults import FaultState
from scepd.store.postgres.migrations import migrate
from scepd.store.postgres.watchdog import Overdue, Watchdog, shut_down, socket_of
from scepd.store.thread import ConnectionThread

T = TypeVar("T")
Conn = psycopg.Connection[DictRow]
_log = logging.getLogger("scepd.store")

# Run again from the start: the other transaction won, ours saw nothing of it.
RETRIED = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
ATTEMPTS = 8

# Defaults a URL may override (`connect_timeout=`, `options=-c statement_timeout=...`).
STATEMENT_TIMEOUT_SECONDS = 10
STATEMENT_TIMEOUT = f"{STATEMENT_TIMEOUT_SECONDS}s"
CONNECT_TIMEOUT = 5  # seconds
MIN_CONNECT_TIMEOUT = 2  # libpq's floor, which psycopg keeps: a shorter connect_timeout counts as 2 s
# A call's bound is the session's statement_timeout plus this: time for the server's own cancel to come back.
GRACE = 2.0
# The bound of a call before any session said its statement_timeout (a store opened while the database was
# unreachable): the default's, so calls queued behind connection attempts that hang still end in time.
UNCONNECTED_BOUND = STATEMENT_TIMEOUT_SECONDS + GRACE

# SQLSTATE (exact, then its two-character class) -> StoreError.kind.
_BY_STATE = {
    "53100": "full",  # disk_full
    "25006": "readonly",  # read_only_sql_transaction: a hot standby, or default_transaction_read_only
    "58030": "io",  # io_error
    "XX001": "corrupt",  # data_corrupted
    "XX002": "corrupt",  # index_corrupted
    "40001": "locked",  # serialization_failure, still failing after ATTEMPTS
    "40P01": "locked",  # deadlock_detected, likewise
    "55P03": "locked",  # lock_not_available
    "57014": "locked",  # query_canceled: statement_timeout
    "57P01": "cantopen",  # admin_shutdown: the server is stopping
    "57P02": "cantopen",  # crash_shutdown
    "57P03": "cantopen",  # cannot_connect_now: starting up or in recovery
    "53300": "cantopen",  # too_many_connections
    "3D000": "cantopen",  # invalid_catalog_name: no such database
}
_BY_CLASS = {
    "08": "cantopen",  # connection exception
    "28": "cantopen",  # invalid authorization
    "23": "constraint",  # integrity constraint violation
    "22": "constraint",  # data exception: a value the schema refuses
}


def store_error(e: psycopg.Error, context: str = "") -> StoreError:
    """psycopg's exception as a StoreError whose kind says what an operator must fix."""
    state = e.sqlstate or ""
    kind = _BY_STATE.get(state) or _BY_CLASS.get(state[:2], "")
    if not kind:
        # No SQLSTATE: libpq could not reach the server, or the connection broke mid-call.
        kind = "cantopen" if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError) else "other"
    text = f"{e} ({state})" if state else str(e)
    return StoreError(f"{context}: {text}" if context else text, kind)


def describe(url: str) -> str:
    """The database a URL names, without its password, for logs."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql (unparsable location)"
    parts.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(parts.items()) if k in ("host", "port", "dbname", "user"))


def connect(url: str, *, read_only: bool = False) -> Conn:
    """One connection in autocommit mode (`transaction` says where transactions start and end), its
    session set up (`prepare`)."""
    conn = open_connection(url)
    try:
        prepare(conn, read_only=read_only)
    except BaseException:
        conn.close()
        raise
    return conn


def open_connection(url: str, *, timeout: int | None = None) -> Conn:
    """A connection whose session is not set up yet (`prepare`): `Link` hands its socket to the watchdog
    first, so that a server that stops answering during the set-up cannot hold it either.

    `timeout` (seconds) shortens the connect timeout for a call that has less time left than that."""
    params = conninfo_to_dict(url)
    options = str(params.get("options") or "")
    if "statement_timeout" not in options:  # no statement holds a connection's thread longer than this
        options = f"{options} -c statement_timeout={STATEMENT_TIMEOUT}".strip()
    raw = params.get("connect_timeout")
    configured = int(float(raw)) if raw not in (None, "") else CONNECT_TIMEOUT
    if timeout is not None:  # 0 or less in a URL means no limit of its own
        configured = timeout if configured <= 0 else min(configured, timeout)
    return psycopg.connect(
        url,
        autocommit=True,
        row_factory=dict_row,
        connect_timeout=configured,
        options=options,
        # Over TCP, notice a peer that vanished without a word (a partition) within about 25 s.
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
    )


def prepare(conn: Conn, *, read_only: bool = False) -> float | None:
    """Set the session up; the seconds a call may take on it (`call_bound`)."""
    # UTC in and out; every commit durable before it returns, whatever the server's default.
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute("SET synchronous_commit = on")
    if read_only:
        conn.execute("SET default_transaction_read_only = on")
    return call_bound(conn)


def call_bound(conn: Conn) -> float | None:
    """Seconds a call may take on this session: its statement_timeout plus GRACE; None when it has none."""
    row = conn.execute("SELECT setting::bigint AS ms FROM pg_settings WHERE name = 'statement_timeout'").fetchone()
    ms = int(row["ms"]) if row is not None else 0
    return ms / 1000 + GRACE if ms > 0 else None


class Link:
    """One connection, made again on first use after it was lost. Only its thread uses the connection;
    the watchdog thread may break it (`break_if_overdue`) when a call runs past its deadline."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        self.bound: float | None = None  # seconds a call may take, from the last session's statement_timeout
        self._conn: Conn | None = None
        self._sock: socket.socket | None = None  # a duplicate of the connection's socket, for the watchdog
        self._lock = threading.Lock()  # between this link's thread and the watchdog
        self._deadline: float | None = None  # of the call running now (time.monotonic())
        self._overran = False

    def get(self) -> Conn:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self.close()
            timeout = None
            if self._deadline is not None:
                # libpq (and psycopg) wait at least 2 s for a connection: with less time left, leave the
                # attempt to the next call rather than overrun this one's deadline.
                left = self._deadline - time.monotonic()
                if left < MIN_CONNECT_TIMEOUT or self._overran:
                    raise Overdue("no answer from the database, and no time left in this call to connect again")
                timeout = math.floor(left)
            conn = open_connection(self.url, timeout=timeout)
            try:
                sock = socket_of(conn.fileno())
            except BaseException:
                conn.close()
                raise
            with self._lock:  # from here on the watchdog can break it, the session's set-up included
                self._conn, self._sock = conn, sock
            try:
                self.bound = prepare(conn, read_only=self.read_only)
            except BaseException:
                self.close()
                raise
        return conn

    def bounded(self, deadline: float | None, work: Callable[[Link], T]) -> T:
        """`work(self)`, unless `deadline` passed while it was queued; broken by the watchdog if it runs past."""
        if deadline is not None and time.monotonic() >= deadline:
            raise Overdue(f"no answer from the database within {self.bound or 0:g} s (the call never ran)")
        with self._lock:
            self._deadline, self._overran = deadline, False
        try:
            return work(self)
        except psycopg.Error as e:
            if self._overran:
                raise Overdue(f"no answer from the database within {self.bound or 0:g} s; connection dropped") from e
            raise
        finally:
            with self._lock:
                self._deadline = None

    def break_if_overdue(self, now: float) -> None:
        """From the watchdog's thread: shut the socket of a call past its deadline down, once."""
        with self._lock:
            # No socket yet: the call is connecting, which its connect timeout bounds; look again later.
            if self._deadline is None or now < self._deadline or self._overran or self._sock is None:
                return
            self._overran = True
            shut_down(self._sock)

    def close(self) -> None:
        with self._lock:
            conn, sock = self._conn, self._sock
            self._conn = self._sock = None
        if sock is not None:
            sock.close()
        if conn is not None:
            conn.close()


def _idle_connection_died(conn: Conn, e: psycopg.Error) -> bool:
    """The connection failed at the first statement of a call: nothing of the call ran."""
    return conn.broken and isinstance(e, psycopg.OperationalError)


def transaction(link: Link, work: Callable[[Conn], T]) -> T:
    """Run `work` in one transaction and commit; run it again on a serialization failure or deadlock."""
    backoff = Backoff(initial=0.002, maximum=0.1)
    for attempt in range(ATTEMPTS):
        conn = link.get()
        try:
            conn.execute("BEGIN")
        except psycopg.Error as e:
            if attempt == 0 and _idle_connection_died(conn, e):
                continue
            raise
        try:
            result = work(conn)
            conn.execute("COMMIT")
            return result
        except psycopg.Error as e:
            _rollback(conn)
            if e.sqlstate in RETRIED and attempt + 1 < ATTEMPTS:
                time.sleep(backoff.next())  # this thread's own pause: the event loop goes on
                continue
            raise
        except BaseException:
            _rollback(conn)
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def statements(link: Link, work: Callable[[Conn], T]) -> T:
    """Run `work` outside a transaction (each statement its own): for reads."""
    conn = link.get()
    try:
        return work(conn)
    except psycopg.Error as e:
        if _idle_connection_died(conn, e):
            return work(link.get())  # reads are safe to run again
        raise


def _rollback(conn: Conn) -> None:
    if not conn.broken and conn.info.transaction_status != pq.TransactionStatus.IDLE:
        conn.execute("ROLLBACK")


# SQLSTATEs of a server that is there but cannot take us yet: keep trying (`unreachable`).
_NOT_YET = frozenset({"57P01", "57P02", "57P03", "53300"})  # shutting down, crashed, starting, no free slot
# psycopg reports no SQLSTATE for a connection the server refused during start-up (libpq keeps only the
# message text), so the server's permanent refusals are told by their (English) words: a wrong user or
# database, or authentication, which no amount of waiting mends.
_REFUSED = (
    "does not exist",  # 3D000 database, 28000 role
    "authentication failed",  # 28P01 password, certificate, peer, ident
    "pg_hba.conf",  # 28000 no entry / rejects connection
    "permission denied",  # 42501 no CONNECT privilege
    "not permitted to log in",  # 28000 NOLOGIN role
    "no password supplied",  # libpq: no password file entry
    "password is required",
    "does not support ssl",  # sslmode asks for what the server cannot do
    "certificate",  # TLS: a server or client certificate refused
)


def unreachable(e: psycopg.Error) -> bool:
    """Whether an error opening the store means "the database is not there yet" (keep trying), as opposed
    to a configuration the database refuses (fail start-up).

    Not there yet: libpq could not connect (refused, no socket, DNS, timeout: an OperationalError
    without a SQLSTATE, unless the server's words say it refused us), class 08, and a server that is
    starting, stopping or full (57P01-57P03, 53300)."""
    state = e.sqlstate
    if state:
        return state[:2] == "08" or state in _NOT_YET
    if not isinstance(e, psycopg.OperationalError):
        return False  # ProgrammingError: an unparsable URL or an unknown connection option
    text = str(e).lower()
    return not any(words in text for words in _REFUSED)


def _open_links(url: str) -> tuple[Link, Link]:
    writer = Link(url)
    try:
        transaction(writer, migrate)
        reader = Link(url, read_only=True)
        reader.get()
    except BaseException:
        writer.close()
        raise
    return writer, reader


class Database:
    """The write connection's thread, the read-only connection's thread, and this process's fault state."""

    def __init__(self, writer: Link, reader: Link, url: str, *, migrated: bool = True) -> None:
        self._links = (writer, reader)
        # False while the database has not been reached yet (`open`): the writer's thread migrates the
        # schema before the first call that reaches it, and reads go to that thread until then.
        self._migrated = migrated
        self._watchdog: Watchdog | None = Watchdog([writer, reader])
        self._writer: ConnectionThread[Link] | None = ConnectionThread(writer, "scepd-store", Link.close)
        self._reader: ConnectionThread[Link] | None = ConnectionThread(reader, "scepd-store-reader", Link.close)
        self.location = describe(url)
        self._faults = FaultState(Episode(_log, "store_fault", location=self.location))

    @classmethod
    async def open(cls, url: str, *, connect_later: bool = False) -> Database:
        """Connect and bring the schema up to date in a worker thread; the caller must `close()`.

        With `connect_later` (the daemon: a power cut's restart may bring the app nodes up before the
        database), a database that is not there yet (`unreachable`) does not fail the open: the store
        comes back unconnected, every call fails as `cantopen` (a 503 for a client) within one fault
        episode, and the first call that reaches the database migrates the schema, under the same
        advisory lock, before doing its own work. What waiting cannot mend (a refused login, no such
        database, a newer schema) raises here either way. Without it (a CLI command) any failure does."""
        try:
            writer, reader = await trio.to_thread.run_sync(_open_links, url)
        except psycopg.Error as e:
            error = store_error(e, describe(url))
            if not (connect_later and unreachable(e)):
                raise error from e
            links = Link(url), Link(url, read_only=True)
            for link in links:
                link.bound = UNCONNECTED_BOUND
            database = cls(*links, url, migrated=False)
            database._faults.failed(error)
            return database
        return cls(writer, reader, url)

    @property
    def fault(self) -> StoreError | None:
        """The last error while calls fail; None once a write commits again."""
        return self._faults.fault

    @property
    def last_commit(self) -> float | None:
        """When (`trio.current_time()`) a write last committed; None until then and after any fault."""
        return self._faults.last_commit

    async def close(self) -> None:
        threads, watchdog = (self._reader, self._writer), self._watchdog
        self._reader = self._writer = self._watchdog = None
        with trio.CancelScope(shield=True):
            for thread in threads:
                if thread is not None:
                    await thread.stop()
            if watchdog is not None:
                await trio.to_thread.run_sync(watchdog.stop)

    def _deadline(self, link: Link) -> float | None:
        """When a call submitted now must be done, queueing included (time.monotonic())."""
        return time.monotonic() + link.bound if link.bound is not None else None

    async def call(self, work: Callable[[Link], T], *, committed: Callable[[T], bool]) -> T:
        """Run `work(link)` on the write connection's thread; `committed(result)` says whether it wrote."""
        thread = self._writer
        if thread is None:
            raise StoreError("the store is closed", "closed")
        deadline = self._deadline(self._links[0])
        try:
            result = await thread.call(lambda link: link.bounded(deadline, self._with_schema(work)))
        except psycopg.Error as e:
            raise self._faults.failed(store_error(e)) from e
        except StoreError as e:  # from a deferred migration: a schema newer than this scepd
            raise self._faults.failed(e) from e
        if committed(result):
            self._faults.committed()
        return result

    def _with_schema(self, work: Callable[[Link], T]) -> Callable[[Link], T]:
        """`work`, preceded by the migration while the database was never reached (on the writer's thread)."""
        if self._migrated:
            return work

        def migrated_first(link: Link) -> T:
            if not self._migrated:  # only this thread sets it
                transaction(link, migrate)
                self._migrated = True
                event(_log, logging.INFO, "store_migrated", location=self.location)
            return work(link)

        return migrated_first

    async def run(self, work: Callable[[Conn], T]) -> T:
        """Read with `work(conn)` on the write connection, ordered with this process's writes."""
        return await self.call(lambda link: statements(link, work), committed=lambda _: False)

    async def read(self, work: Callable[[Conn], T]) -> T:
        """Read with `work(conn)` on the read-only connection: it sees committed writes and waits for none."""
        if not self._migrated:  # the schema may not exist yet: the writer's thread makes it first
            return await self.run(work)
        thread = self._reader
        if thread is None:
            raise StoreError("the store is closed", "closed")
        deadline = self._deadline(self._links[1])
        try:
            return await thread.call(lambda link: link.bounded(deadline, lambda li: statements(li, work)))
        except psycopg.Error as e:
            raise self._faults.failed(store_error(e)) from e

    async def write(self, work: Callable[[Conn], T]) -> T:
        """`work(conn)` in one transaction, committed when this returns."""
        return await self.call(lambda link: transaction(link, work), committed=lambda _: True)

    async def execute(self, sql: str, args: tuple[Any, ...] | list[Any]) -> int:
        """One statement in its own transaction; the number of rows it changed."""
        return await self.write(lambda conn: conn.execute(sql, args).rowcount)


class OnDatabase:
    """Base of the role classes: each implements one role protocol on the shared `Database`."""

    def __init__(self, database: Database) -> None:
        self.database = database
