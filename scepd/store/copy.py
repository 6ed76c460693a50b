"""Moving an SQLite store into an empty PostgreSQL database: what `scepd store copy` does.

Table to table, not through the roles. The roles only make rows the way the
daemon does: a challenge is added unused, a request is held as pending with a
fresh id, a CRL number is bumped by one. A copy must write the state as it is
(a challenge already used, a request rejected last week, ledger ids, the CRL
number reached), so each column is read with the SQLite codec and written
with the PostgreSQL one, by its kind (time, serial, bytes, ...).

`TABLES` lists every table and column the copy carries and `NOT_COPIED` the
tables it leaves behind, with the reason; tests/store/test_copy.py compares
both lists with the two backends' real schemas, so a migration that adds a
table or a column fails that test until the copy knows it.

The source is read in one read transaction (one snapshot, whatever a daemon
still writes meanwhile); the target is written in one transaction, checked
(rows per table, certificates per status, the CRL number) before COMMIT, and
refused unless it is empty. Blocking: run it outside an event loop (the CLI)
or in a worker thread.
"""

from __future__ import annotations

import enum
import errno
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scepd.store.base import StoreError
from scepd.store.sqlite import codecs as lite
from scepd.store.sqlite.migrations import MIGRATIONS as SQLITE_MIGRATIONS

if TYPE_CHECKING:
    from scepd.store.postgres.connection import Conn

# psycopg (the `postgres` extra) and the PostgreSQL backend are imported by the functions that use them, so
# this module (the errors the CLI classifies) imports on an appliance without psycopg.


class Kind(enum.Enum):
    """How a column is written by each backend, and so how the copy converts it."""

    TEXT = "text"
    INTEGER = "integer"
    SERIAL = "serial"  # hex text in both: decoded and encoded again, so a bad value is caught here
    TIME = "time"  # ISO-8601 text in SQLite, timestamptz in PostgreSQL
    BYTES = "bytes"  # BLOB, bytea
    BOOL = "bool"  # 0/1 in SQLite, boolean in PostgreSQL


@dataclass(frozen=True)
class Table:
    """One table as the copy carries it: its columns, in the order both schemas declare them."""

    name: str
    columns: tuple[tuple[str, Kind], ...]
    order: str  # the source's read order: ids ascending, so the target's identity can continue above them
    identity: bool = False  # PostgreSQL generates `id` (GENERATED ALWAYS): its sequence is moved past the copy

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


_T, _I, _S, _TM, _B, _BO = Kind.TEXT, Kind.INTEGER, Kind.SERIAL, Kind.TIME, Kind.BYTES, Kind.BOOL

# In the order they are written: certificates before the pending requests whose `serial` refers to them.
TABLES: tuple[Table, ...] = (
    Table(
        "certificates",
        (
            ("id", _I),
            ("serial", _S),
            ("transaction_id", _T),
            ("subject", _T),
            ("requester", _T),
            ("csr_sha256", _T),
            ("profile", _T),
            ("not_before", _TM),
            ("not_after", _TM),
            ("issued_at", _TM),
            ("status", _T),
            ("der", _B),
            ("renewal_of", _S),
            ("revoked_at", _TM),
            ("revocation_reason", _T),
        ),
        order="id",
        identity=True,
    ),
    Table("challenges", (("digest", _T), ("expires_at", _TM), ("used_at", _TM), ("note", _T)), order="digest"),
    Table(
        "pending_requests",
        (
            ("id", _I),
            ("transaction_id", _T),
            ("csr_sha256", _T),
            ("csr_der", _B),
            ("signer_der", _B),
            ("subject", _T),
            ("endpoint", _T),
            ("profile", _T),
            ("challenge_mode", _T),
            ("message_type", _T),
            ("renewal_of", _S),
            ("received_at", _TM),
            ("expires_at", _TM),
            ("status", _T),
            ("decided_at", _TM),
            ("reason", _T),
            ("serial", _S),
        ),
        order="id",
        identity=True,
    ),
    Table(
        "intune_notifications",
        (
            ("id", _I),
            ("transaction_id", _T),
            ("serial", _S),
            ("kind", _T),
            ("delivered", _BO),
            ("detail", _T),
            ("at", _TM),
            ("issuer", _T),
        ),
        order="id",
        identity=True,
    ),
    Table(
        "intune_revocations",
        (
            ("request_context", _T),
            ("serial_text", _T),
            ("outcome", _T),
            ("received_at", _TM),
            ("uploaded_at", _TM),
        ),
        order="request_context",
    ),
    Table("crl_current", (("id", _I), ("number", _I), ("der", _B)), order="id"),
)

# Not copied row by row: the target's migration creates its one row (number 0), and the copy sets the number
# to the highest the source handed out or signed, so the target's next CRL is numbered above every earlier one.
CRL_STATE = Table("crl_state", (("id", _I), ("number", _I)), order="id")

NOT_COPIED: Mapping[str, str] = {
    "schema_version": "each backend numbers its own migrations; the target is migrated to the current schema",
    "health": "a scratch row `ping` rewrites; it says nothing about the CA",
    "certificate_counts": "derived: counted again from the certificates written to the target",
    "leases": "who runs the background loops now: the nodes on the target claim it afresh when they start",
    "node_keys": "each node's key fingerprint: the nodes on the target announce theirs afresh when they start",
}


class CopyRefused(Exception):
    """The target holds data already: nothing was written (a copy never merges into a live database)."""


class CopyMismatch(Exception):
    """The target does not hold what was read from the source; the transaction was rolled back."""


@dataclass(frozen=True)
class Tally:
    """What a store holds, in numbers the copy compares between source and target."""

    rows: dict[str, int]  # per table of TABLES
    statuses: dict[str, int]  # certificates per status (the ones present)
    crl_number: int  # the highest CRL number handed out (crl_state) or signed (crl_current)

    def differences(self, found: Tally) -> list[str]:
        """Where `found` (the target) differs from this (the source), one line each; empty when they match."""
        wrong = [
            f"{t}: {n} in the source, {found.rows.get(t, 0)} in the target"
            for t, n in self.rows.items()
            if n != found.rows.get(t, 0)
        ]
        for status in sorted(set(self.statuses) | set(found.statuses)):
            a, b = self.statuses.get(status, 0), found.statuses.get(status, 0)
            if a != b:
                wrong.append(f"{status} certificates: {a} in the source, {b} in the target")
        if self.crl_number != found.crl_number:
            wrong.append(f"CRL number: {self.crl_number} in the source, {found.crl_number} in the target")
        return wrong


@dataclass(frozen=True)
class CopyReport:
    """What was copied: rows per table in the source snapshot and in the target, and the CRL number carried."""

    source: Tally  # the snapshot read
    target: Tally  # counted again on a fresh connection after COMMIT

    @property
    def crl_number(self) -> int:
        """The highest CRL number the source reached; the target's next one is above it."""
        return self.source.crl_number


# -- converting one value -------------------------------------------------------------


Converter = Callable[[Any], Any]


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError(f"expected bytes, found {type(value).__name__}")
    return value


def _bool(value: Any) -> bool:
    if value not in (0, 1):
        raise ValueError(f"expected 0 or 1, found {value!r}")
    return bool(value)


def _integer(value: Any) -> int:
    if not isinstance(value, int):
        raise ValueError(f"expected an integer, found {value!r}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, found {type(value).__name__}")
    return value


def converters() -> dict[Kind, Converter]:
    """For each kind: a value as SQLite's codec stored it -> the same value as PostgreSQL's codec takes it.

    Times and serials go through both codecs (decoded, then encoded), so a value either backend would
    refuse (a naive time, a serial over 160 bits) stops the copy instead of reaching the target.
    """
    from scepd.store.postgres import codecs as pg

    return {
        Kind.TIME: lambda v: pg.encode_time(lite.decode_time(v)),
        Kind.SERIAL: lambda v: pg.encode_serial(lite.decode_serial(v)),
        Kind.BYTES: _bytes,
        Kind.BOOL: _bool,
        Kind.INTEGER: _integer,
        Kind.TEXT: _text,
    }


def _converted_rows(
    table: Table, rows: Iterator[sqlite3.Row], convert: Mapping[Kind, Converter]
) -> Iterator[tuple[Any, ...]]:
    steps = [(name, convert[kind]) for name, kind in table.columns]
    for row in rows:
        out = []
        for value, (name, step) in zip(row, steps, strict=True):
            try:
                out.append(None if value is None else step(value))
            except ValueError as e:
                where = f"{table.name}.{name} in the row with {table.columns[0][0]} = {row[0]!r}"
                raise StoreError(f"{where}: {e}", "corrupt") from None
        yield tuple(out)


# -- the source ---------------------------------------------------------------------


@contextmanager
def _source_snapshot(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection inside one read transaction: every read sees the same committed state."""
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        # In WAL mode the snapshot is taken by the first read after BEGIN and kept until the end, while a
        # daemon still writing appends to the WAL beside it.
        conn.execute("BEGIN")
        _check_source_schema(conn, path)
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def _check_source_schema(conn: sqlite3.Connection, path: Path) -> None:
    try:
        version = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    except sqlite3.OperationalError:
        raise StoreError(f"{path}: not a scepd store (no schema_version table)", "corrupt") from None
    latest = SQLITE_MIGRATIONS[-1][0]
    if version > latest:
        raise StoreError(f"{path}: the store has schema version {version}; this scepd knows up to {latest}")
    if version < latest:
        raise StoreError(
            f"{path}: the store has schema version {version}, older than this scepd's {latest}:"
            " start this scepd on it once (or run `scepd cert list`) to bring it up to date, then copy"
        )


def _source_tally(conn: sqlite3.Connection) -> Tally:
    """Rows per table, certificates per status, and the highest CRL number, all from the snapshot."""
    rows = {t.name: int(conn.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0]) for t in TABLES}
    statuses = {s: int(n) for s, n in conn.execute("SELECT status, count(*) FROM certificates GROUP BY status")}
    number = conn.execute(
        "SELECT max(coalesce((SELECT max(number) FROM crl_state), 0), coalesce((SELECT max(number) FROM crl_current), 0))"
    ).fetchone()[0]
    return Tally(rows, statuses, int(number))


# -- the target ---------------------------------------------------------------------


def _target_tally(conn: Conn) -> Tally:
    """Rows per table, certificates per status (from the counter table the triggers keep), the CRL number."""
    rows = {}
    for t in TABLES:
        found = conn.execute(f"SELECT count(*) AS n FROM {t.name}").fetchone()
        rows[t.name] = int(found["n"]) if found is not None else 0
    statuses = {
        r["status"]: int(r["n"])
        for r in conn.execute(
            "SELECT status, sum(n)::bigint AS n FROM certificate_counts GROUP BY status HAVING sum(n) <> 0"
        )
    }
    state = conn.execute("SELECT number FROM crl_state WHERE id = 1").fetchone()
    return Tally(rows, statuses, int(state["number"]) if state is not None else 0)


def _refuse_unless_empty(conn: Conn, where: str) -> None:
    found = _target_tally(conn)
    held = [f"{n} in {name}" for name, n in found.rows.items() if n]
    if found.crl_number:
        held.append(f"CRL number {found.crl_number} handed out")
    if held:
        raise CopyRefused(
            f"{where} is not empty: {', '.join(held)}; the copy only writes into an empty database"
            " (create a new one, or drop this one if it holds nothing you need)"
        )


def _write_table(conn: Conn, table: Table, source: sqlite3.Connection, convert: Mapping[Kind, Converter]) -> int:
    names = ", ".join(table.column_names)
    rows = source.execute(f"SELECT {names} FROM {table.name} ORDER BY {table.order}")
    written = 0
    with conn.cursor().copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
        for row in _converted_rows(table, rows, convert):
            copy.write_row(row)
            written += 1
    if table.identity:
        # The ids came from the source; the next row PostgreSQL numbers must come after them.
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), max(id)) FROM {table.name}"
            " HAVING max(id) IS NOT NULL"
        )
    return written


# The trigger that adds each inserted certificate to `certificate_counts` (postgres/migrations.py).
COUNTING_TRIGGER = "certificate_counts_insert_delete"


@contextmanager
def _counting_once(conn: Conn) -> Iterator[None]:
    """Certificates written with the counting trigger off, then counted once.

    Row by row, every insert of one transaction updates the same counter row, and each update has to step
    over all the row versions the transaction left before it: 100,000 certificates took 166 s instead of
    16 s (docs/benchmarks.md, "Copying a store into PostgreSQL"). Off and on again inside the copy's
    transaction, so nobody else sees it off; the check that follows compares these counts with the source's.
    """
    conn.execute(f"ALTER TABLE certificates DISABLE TRIGGER {COUNTING_TRIGGER}")
    yield
    conn.execute(
        "INSERT INTO certificate_counts (status, shard, n) SELECT status, 0, count(*) FROM certificates GROUP BY status"
    )
    conn.execute(f"ALTER TABLE certificates ENABLE TRIGGER {COUNTING_TRIGGER}")


def copy_store(source: Path, target_url: str, *, progress: Callable[[str, int], None] | None = None) -> CopyReport:
    """Copy the SQLite store at `source` into the PostgreSQL database at `target_url`, which must be empty.

    The target's schema is created or brought up to date first, in the same transaction. Raises
    `CopyRefused` when the target holds any row, `CopyMismatch` when what the target holds before COMMIT
    differs from the source snapshot (nothing is committed then), `StoreError` for either database's faults.
    `progress(table, rows)` is called after each table. After COMMIT the target is counted again on a fresh
    connection (the report's `target`); a difference then raises `CopyMismatch` too.
    """
    import psycopg

    from scepd.store.postgres.connection import connect, describe, store_error
    from scepd.store.postgres.migrations import migrate
    from scepd.store.sqlite.connection import store_error as sqlite_error

    where = describe(target_url)
    convert = converters()
    try:
        with _source_snapshot(source) as snapshot:
            expected = _source_tally(snapshot)
            with connect(target_url) as conn:
                conn.execute("BEGIN")
                migrate(conn)  # also lifts the session's statement_timeout for this transaction
                # Writers wait (readers do not) until COMMIT: nothing slips in between the check and the copy.
                conn.execute("SET LOCAL lock_timeout = '10s'")
                locked = ", ".join([t.name for t in TABLES] + [CRL_STATE.name])
                conn.execute(f"LOCK TABLE {locked} IN EXCLUSIVE MODE")
                _refuse_unless_empty(conn, where)
                read: dict[str, int] = {}
                with _counting_once(conn):
                    for table in TABLES:
                        read[table.name] = _write_table(conn, table, snapshot, convert)
                        if progress is not None:
                            progress(table.name, read[table.name])
                conn.execute("UPDATE crl_state SET number = %s WHERE id = 1", (expected.crl_number,))
                # What was streamed must be what the snapshot counted, and the target must hold both.
                wrong = [f"{t}: {expected.rows[t]} counted, {n} read" for t, n in read.items() if n != expected.rows[t]]
                wrong += expected.differences(_target_tally(conn))
                if wrong:
                    conn.execute("ROLLBACK")
                    raise CopyMismatch(f"the copy into {where} does not match its source: {'; '.join(wrong)}")
                conn.execute("COMMIT")
        with connect(target_url, read_only=True) as fresh:
            committed = _target_tally(fresh)
    except psycopg.Error as e:
        raise store_error(e, where) from e
    except sqlite3.Error as e:
        raise sqlite_error(e, str(source)) from e
    wrong = expected.differences(committed)
    if wrong:
        raise CopyMismatch(f"after the copy committed, {where} does not match its source: {'; '.join(wrong)}")
    return CopyReport(source=expected, target=committed)


def known_columns() -> dict[str, Sequence[str]]:
    """Every table the copy handles with its columns (the copied ones, and crl_state's number)."""
    return {t.name: t.column_names for t in (*TABLES, CRL_STATE)}
