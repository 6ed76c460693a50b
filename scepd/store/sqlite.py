"""The embedded store: one SQLite file in WAL mode, written durably.

sqlite3 blocks, so every call runs in a worker thread; one connection is
shared and a `CapacityLimiter(1)` makes sure only one thread uses it at a
time. Calls are never abandoned on cancellation: the thread finishes (and
commits or rolls back) before the limiter is released, so a cancelled request
cannot leave a transaction half-open for the next one.

`synchronous=FULL` because a certificate that reached a client must survive a
power cut; WAL keeps readers from waiting on that fsync. `busy_timeout` lets a
second process (`scepd challenge mint` beside the daemon) wait its turn.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

from scepd import metrics
from scepd.episodes import Episode
from scepd.store.base import (
    MAX_SERIAL,
    CertificateRecord,
    CertStatus,
    NotificationKind,
    NotificationRecord,
    PendingRecord,
    PendingStatus,
    RevocationOutcome,
    RevocationRequestRecord,
    RevocationState,
    RevokedEntry,
    SerialCollision,
    StoreError,
)

T = TypeVar("T")
_log = logging.getLogger("scepd.store")

# Each migration runs once, in one transaction, in order; append, never edit.
MIGRATIONS: Sequence[tuple[int, Sequence[str]]] = (
    (
        1,
        (
            """
            CREATE TABLE certificates (
                id                INTEGER PRIMARY KEY,
                serial            TEXT NOT NULL UNIQUE
                                  CHECK (length(serial) BETWEEN 1 AND 40 AND serial NOT GLOB '*[^0-9a-f]*'),
                transaction_id    TEXT NOT NULL,
                subject           TEXT NOT NULL,
                requester         TEXT NOT NULL,
                csr_sha256        TEXT NOT NULL,
                profile           TEXT NOT NULL,
                not_before        TEXT NOT NULL,
                not_after         TEXT NOT NULL,
                issued_at         TEXT NOT NULL,
                status            TEXT NOT NULL CHECK (status IN ('valid', 'revoked', 'superseded')),
                der               BLOB NOT NULL,
                renewal_of        TEXT REFERENCES certificates (serial),
                revoked_at        TEXT,
                revocation_reason TEXT
            )
            """,
            "CREATE INDEX certificates_by_transaction ON certificates (transaction_id, csr_sha256)",
            "CREATE INDEX certificates_by_status ON certificates (status)",
            """
            CREATE TABLE challenges (
                digest     TEXT PRIMARY KEY NOT NULL CHECK (length(digest) = 64),
                expires_at TEXT NOT NULL,
                used_at    TEXT,
                note       TEXT NOT NULL DEFAULT ''
            )
            """,
            "CREATE TABLE health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at TEXT NOT NULL)",
        ),
    ),
    (
        2,
        (
            """
            CREATE TABLE intune_notifications (
                id             INTEGER PRIMARY KEY,
                transaction_id TEXT NOT NULL,
                serial         TEXT,
                kind           TEXT NOT NULL CHECK (kind IN ('success', 'failure')),
                delivered      INTEGER NOT NULL CHECK (delivered IN (0, 1)),
                detail         TEXT NOT NULL,
                at             TEXT NOT NULL
            )
            """,
            "CREATE INDEX intune_notifications_tid ON intune_notifications (transaction_id)",
            """
            CREATE TABLE intune_revocations (
                request_context TEXT PRIMARY KEY NOT NULL,
                serial_text     TEXT NOT NULL,
                outcome         TEXT NOT NULL CHECK (outcome IN ('revoked', 'not_found', 'already_revoked')),
                received_at     TEXT NOT NULL,
                uploaded_at     TEXT
            )
            """,
            "CREATE TABLE crl_state (id INTEGER PRIMARY KEY CHECK (id = 1), number INTEGER NOT NULL)",
        ),
    ),
    (
        3,
        (
            """
            CREATE TABLE pending_requests (
                id             INTEGER PRIMARY KEY,
                transaction_id TEXT NOT NULL,
                csr_sha256     TEXT NOT NULL,
                csr_der        BLOB NOT NULL,
                signer_der     BLOB NOT NULL,
                subject        TEXT NOT NULL,
                endpoint       TEXT NOT NULL,
                profile        TEXT NOT NULL,
                challenge_mode TEXT NOT NULL,
                message_type   TEXT NOT NULL,
                renewal_of     TEXT,
                received_at    TEXT NOT NULL,
                expires_at     TEXT NOT NULL,
                status         TEXT NOT NULL
                               CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'issued')),
                decided_at     TEXT,
                reason         TEXT NOT NULL DEFAULT '',
                serial         TEXT REFERENCES certificates (serial),
                UNIQUE (transaction_id, csr_sha256)
            )
            """,
            "CREATE INDEX pending_requests_by_status ON pending_requests (status, expires_at)",
        ),
    ),
    (
        4,
        (
            # The CRL the primary process signed last, for the serving processes beside it.
            "CREATE TABLE crl_current (id INTEGER PRIMARY KEY CHECK (id = 1), number INTEGER NOT NULL, der BLOB NOT NULL)",
        ),
    ),
    (
        5,
        (
            # Large stores (a million certificates): the CRL reads only revoked rows, from an index
            # that holds every column it needs, already in CRL order.
            "CREATE INDEX certificates_revoked ON certificates (revoked_at, serial, not_after, revocation_reason)"
            " WHERE status = 'revoked'",
            # Counts by status kept by triggers, so a metrics scrape does not count a million rows.
            "CREATE TABLE certificate_counts (status TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL) WITHOUT ROWID",
            "INSERT INTO certificate_counts (status, n) SELECT status, count(*) FROM certificates GROUP BY status",
            """
            CREATE TRIGGER certificate_counts_insert AFTER INSERT ON certificates BEGIN
                INSERT INTO certificate_counts (status, n) VALUES (NEW.status, 1)
                    ON CONFLICT (status) DO UPDATE SET n = n + 1;
            END
            """,
            """
            CREATE TRIGGER certificate_counts_update AFTER UPDATE OF status ON certificates
            WHEN OLD.status IS NOT NEW.status BEGIN
                UPDATE certificate_counts SET n = n - 1 WHERE status = OLD.status;
                INSERT INTO certificate_counts (status, n) VALUES (NEW.status, 1)
                    ON CONFLICT (status) DO UPDATE SET n = n + 1;
            END
            """,
            """
            CREATE TRIGGER certificate_counts_delete AFTER DELETE ON certificates BEGIN
                UPDATE certificate_counts SET n = n - 1 WHERE status = OLD.status;
            END
            """,
        ),
    ),
    (
        6,
        (
            # The issuingCertificateAuthority a success notification sent: Intune echoes it as the
            # issuerName of revocation requests, so every name ever sent must be polled for.
            "ALTER TABLE intune_notifications ADD COLUMN issuer TEXT",
            # Each revocation round asks for the distinct names: an index scan, not a table scan.
            "CREATE INDEX intune_notifications_issuer ON intune_notifications (kind, issuer)",
        ),
    ),
)

_DIGEST = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]+")
_COLUMNS = (
    "serial, transaction_id, subject, requester, csr_sha256, profile, not_before, not_after,"
    " issued_at, status, der, renewal_of, revoked_at, revocation_reason"
)


def encode_time(when: dt.datetime) -> str:
    """Fixed-width ISO-8601 UTC, so SQL string comparison orders like time."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("naive datetime: the store only takes timezone-aware times")
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decode_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def encode_serial(serial: int) -> str:
    if not 0 < serial <= MAX_SERIAL:
        raise ValueError("a serial is a positive integer of at most 160 bits")
    return f"{serial:x}"


def _record(row: sqlite3.Row) -> CertificateRecord:
    return CertificateRecord(
        serial=int(row["serial"], 16),
        transaction_id=row["transaction_id"],
        subject=row["subject"],
        requester=row["requester"],
        csr_sha256=row["csr_sha256"],
        profile=row["profile"],
        not_before=decode_time(row["not_before"]),
        not_after=decode_time(row["not_after"]),
        issued_at=decode_time(row["issued_at"]),
        status=CertStatus(row["status"]),
        der=bytes(row["der"]),
        renewal_of=int(row["renewal_of"], 16) if row["renewal_of"] is not None else None,
        revoked_at=decode_time(row["revoked_at"]) if row["revoked_at"] is not None else None,
        revocation_reason=row["revocation_reason"],
    )


_PENDING_COLUMNS = (
    "id, transaction_id, csr_sha256, csr_der, signer_der, subject, endpoint, profile, challenge_mode,"
    " message_type, renewal_of, received_at, expires_at, status, decided_at, reason, serial"
)


def _pending(row: sqlite3.Row) -> PendingRecord:
    def when(name: str) -> dt.datetime | None:
        return decode_time(row[name]) if row[name] is not None else None

    return PendingRecord(
        id=row["id"],
        transaction_id=row["transaction_id"],
        csr_sha256=row["csr_sha256"],
        csr_der=bytes(row["csr_der"]),
        signer_der=bytes(row["signer_der"]),
        subject=row["subject"],
        endpoint=row["endpoint"],
        profile=row["profile"],
        challenge_mode=row["challenge_mode"],
        message_type=row["message_type"],
        renewal_of=int(row["renewal_of"], 16) if row["renewal_of"] is not None else None,
        received_at=decode_time(row["received_at"]),
        expires_at=decode_time(row["expires_at"]),
        status=PendingStatus(row["status"]),
        decided_at=when("decided_at"),
        reason=row["reason"],
        serial=int(row["serial"], 16) if row["serial"] is not None else None,
    )


def _revocation(row: sqlite3.Row) -> RevocationRequestRecord:
    return RevocationRequestRecord(
        request_context=row["request_context"],
        serial_text=row["serial_text"],
        outcome=RevocationOutcome(row["outcome"]),
        received_at=decode_time(row["received_at"]),
        uploaded_at=decode_time(row["uploaded_at"]) if row["uploaded_at"] is not None else None,
    )


def _issued_for_request(conn: sqlite3.Connection, transaction_id: str, csr_sha256: str) -> sqlite3.Row | None:
    """The latest certificate issued for this transactionID and CSR."""
    row: sqlite3.Row | None = conn.execute(
        f"SELECT {_COLUMNS} FROM certificates WHERE transaction_id = ? AND csr_sha256 = ? ORDER BY id DESC LIMIT 1",
        (transaction_id, csr_sha256),
    ).fetchone()
    return row


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


def _write(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
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


def _migrate(conn: sqlite3.Connection) -> None:
    def apply(conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        latest = MIGRATIONS[-1][0]
        if current > latest:
            raise StoreError(f"the store has schema version {current}; this scepd knows up to {latest}")
        now = encode_time(dt.datetime.now(dt.UTC))
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, now))

    _write(conn, apply)


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; `_write` says where they start and end.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: could not switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteStore:
    """`Store` on one SQLite file. Open with `async with SqliteStore.open(path) as store`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        self._limiter = trio.CapacityLimiter(1)
        self._episode = Episode(_log, "store_fault", path=str(path))
        self._fault: StoreError | None = None

    @property
    def fault(self) -> StoreError | None:
        return self._fault

    @classmethod
    async def connect(cls, path: str | Path) -> SqliteStore:
        """Open (creating and migrating as needed); the caller must `close()`."""
        path = Path(path)
        try:
            conn = await trio.to_thread.run_sync(_connect, path)
        except sqlite3.Error as e:
            raise store_error(e, str(path)) from e
        return cls(conn, path)

    @classmethod
    @asynccontextmanager
    async def open(cls, path: str | Path) -> AsyncIterator[SqliteStore]:
        store = await cls.connect(path)
        try:
            yield store
        finally:
            with trio.CancelScope(shield=True):
                await store.close()

    async def close(self) -> None:
        async with self._limiter:
            conn, self._conn = self._conn, None
            if conn is not None:
                await trio.to_thread.run_sync(conn.close)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
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
            if self._fault is not None and conn.total_changes != changes:
                # A write committed: the fault is over (reads alone prove nothing; they work on a full disk).
                self._fault = None
                self._episode.succeeded()
            return result

    def _failed(self, error: StoreError) -> StoreError:
        """Count every store error; log a fault once per episode (the caller answers 503, no traceback)."""
        metrics.STORE_ERRORS.labels(error.kind).inc()
        if error.kind != "constraint":
            self._fault = error
            self._episode.failed(error.kind, str(error))
        return error

    async def _execute(self, sql: str, args: tuple[Any, ...]) -> int:
        """One statement in its own write transaction; the number of rows it changed."""
        return await self._run(lambda conn: _write(conn, lambda c: c.execute(sql, args).rowcount))

    # -- certificates ---------------------------------------------------------

    async def put_issued(self, record: CertificateRecord, *, once: bool = False) -> CertificateRecord | None:
        row: tuple[Any, ...] = (
            encode_serial(record.serial),
            record.transaction_id,
            record.subject,
            record.requester,
            record.csr_sha256,
            record.profile,
            encode_time(record.not_before),
            encode_time(record.not_after),
            encode_time(record.issued_at),
            CertStatus(record.status).value,
            bytes(record.der),
            encode_serial(record.renewal_of) if record.renewal_of is not None else None,
            encode_time(record.revoked_at) if record.revoked_at is not None else None,
            record.revocation_reason,
        )

        sql = f"INSERT INTO certificates ({_COLUMNS}) VALUES ({', '.join('?' * len(row))})"

        def put(conn: sqlite3.Connection) -> sqlite3.Row | None:
            if once and (earlier := _issued_for_request(conn, record.transaction_id, record.csr_sha256)):
                return earlier
            conn.execute(sql, row)
            return None

        def insert(conn: sqlite3.Connection) -> sqlite3.Row | None | bool:
            try:
                return _write(conn, put)
            except sqlite3.IntegrityError as e:
                if "certificates.serial" in str(e) and "UNIQUE" in str(e):
                    return False
                raise

        result = await self._run(insert)
        if result is False:
            raise SerialCollision(record.serial)
        return _record(result) if isinstance(result, sqlite3.Row) else None

    async def find_by_transaction(self, transaction_id: str, csr_sha256: str) -> CertificateRecord | None:
        row = await self._run(lambda conn: _issued_for_request(conn, transaction_id, csr_sha256))
        return _record(row) if row is not None else None

    async def latest_for_transaction(self, transaction_id: str) -> CertificateRecord | None:
        def latest(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(
                f"SELECT {_COLUMNS} FROM certificates WHERE transaction_id = ? ORDER BY id DESC LIMIT 1",
                (transaction_id,),
            ).fetchone()
            return row

        row = await self._run(latest)
        return _record(row) if row is not None else None

    async def get(self, serial: int) -> CertificateRecord | None:
        if not 0 < serial <= MAX_SERIAL:
            return None  # a client may ask for any serial; none outside the range exists

        def get(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(
                f"SELECT {_COLUMNS} FROM certificates WHERE serial = ?", (encode_serial(serial),)
            ).fetchone()
            return row

        row = await self._run(get)
        return _record(row) if row is not None else None

    async def mark_superseded(self, serial: int) -> bool:
        changed = await self._execute(
            "UPDATE certificates SET status = 'superseded' WHERE serial = ? AND status = 'valid'",
            (encode_serial(serial),),
        )
        return changed == 1

    async def revoke(self, serial: int, reason: str, when: dt.datetime) -> bool:
        changed = await self._execute(
            "UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?"
            " WHERE serial = ? AND status != 'revoked'",
            (encode_time(when), reason, encode_serial(serial)),
        )
        return changed == 1

    async def list_certificates(
        self, status: CertStatus | None = None, limit: int = 100, search: str | None = None
    ) -> list[CertificateRecord]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        clauses: list[str] = []
        args: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            args.append(CertStatus(status).value)
        if search:
            # Subject or requester text (case-insensitive, wildcards literal), a whole
            # transaction ID, or the start of a hexadecimal serial.
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", search) + "%"
            alternatives = ["subject LIKE ? ESCAPE '\\'", "requester LIKE ? ESCAPE '\\'", "transaction_id = ?"]
            args += [pattern, pattern, search]
            serial = search.lower().removeprefix("0x").replace(":", "")
            if serial and _HEX.fullmatch(serial):
                alternatives.append("serial LIKE ?")
                args.append(serial + "%")
            clauses.append("(" + " OR ".join(alternatives) + ")")
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        query = f"SELECT {_COLUMNS} FROM certificates {where} ORDER BY id DESC LIMIT ?"
        rows = await self._run(lambda conn: conn.execute(query, [*args, limit]).fetchall())
        return [_record(row) for row in rows]

    # -- one-time challenges --------------------------------------------------

    async def add_challenge(self, digest: str, expires_at: dt.datetime, note: str = "") -> None:
        if not _DIGEST.fullmatch(digest):
            # Guards against storing a plaintext challenge by mistake.
            raise ValueError("expected the lower-case hex SHA-256 digest of the challenge")
        await self._execute(
            "INSERT INTO challenges (digest, expires_at, note) VALUES (?, ?, ?)",
            (digest, encode_time(expires_at), note),
        )

    async def consume_challenge(self, digest: str, now: dt.datetime) -> bool:
        at = encode_time(now)
        # The one UPDATE decides: a second caller finds used_at set and changes no row.
        changed = await self._execute(
            "UPDATE challenges SET used_at = ? WHERE digest = ? AND used_at IS NULL AND expires_at > ?",
            (at, digest, at),
        )
        return changed == 1

    # -- Intune notifications and revocation requests -------------------------

    async def record_notification(self, record: NotificationRecord) -> None:
        await self._execute(
            "INSERT INTO intune_notifications (transaction_id, serial, kind, delivered, detail, at, issuer)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.transaction_id,
                encode_serial(record.serial) if record.serial is not None else None,
                NotificationKind(record.kind).value,
                int(record.delivered),
                record.detail,
                encode_time(record.at),
                record.issuer,
            ),
        )

    async def notified_issuers(self) -> list[str]:
        def names(conn: sqlite3.Connection) -> list[str]:
            # Success notifications recorded before the issuer column existed: the name sent was
            # the certificate's issuer, so read it from the certificate once and keep it.
            old = conn.execute(
                "SELECT n.id, c.der FROM intune_notifications n JOIN certificates c ON c.serial = n.serial"
                " WHERE n.kind = 'success' AND n.issuer IS NULL"
            ).fetchall()
            if old:
                from cryptography import x509

                def fill(c: sqlite3.Connection) -> None:
                    c.executemany(
                        "UPDATE intune_notifications SET issuer = ? WHERE id = ?",
                        [(x509.load_der_x509_certificate(bytes(der)).issuer.rfc4514_string(), id_) for id_, der in old],
                    )

                _write(conn, fill)
            rows = conn.execute(
                "SELECT DISTINCT issuer FROM intune_notifications WHERE kind = 'success' AND issuer IS NOT NULL"
            ).fetchall()
            return sorted(row[0] for row in rows)

        return await self._run(names)

    async def notifications(self, transaction_id: str | None = None, limit: int = 100) -> list[NotificationRecord]:
        where, args = (
            ("", (limit,)) if transaction_id is None else ("WHERE transaction_id = ?", (transaction_id, limit))
        )
        query = (
            "SELECT transaction_id, serial, kind, delivered, detail, at, issuer FROM intune_notifications"
            f" {where} ORDER BY id DESC LIMIT ?"
        )
        rows = await self._run(lambda conn: conn.execute(query, args).fetchall())
        return [
            NotificationRecord(
                transaction_id=row["transaction_id"],
                serial=int(row["serial"], 16) if row["serial"] is not None else None,
                kind=NotificationKind(row["kind"]),
                delivered=bool(row["delivered"]),
                detail=row["detail"],
                at=decode_time(row["at"]),
                issuer=row["issuer"],
            )
            for row in rows
        ]

    async def apply_revocation_request(
        self, request_context: str, serial_text: str, serial: int | None, reason: str, when: dt.datetime
    ) -> tuple[RevocationRequestRecord, bool]:
        at = encode_time(when)

        def apply(conn: sqlite3.Connection) -> tuple[sqlite3.Row, bool]:
            seen = conn.execute(
                "SELECT * FROM intune_revocations WHERE request_context = ?", (request_context,)
            ).fetchone()
            if seen is not None:
                return seen, False
            outcome = RevocationOutcome.NOT_FOUND
            if serial is not None and 0 < serial <= MAX_SERIAL:
                changed = conn.execute(
                    "UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?"
                    " WHERE serial = ? AND status != 'revoked'",
                    (at, reason, encode_serial(serial)),
                ).rowcount
                if changed:
                    outcome = RevocationOutcome.REVOKED
                elif conn.execute("SELECT 1 FROM certificates WHERE serial = ?", (encode_serial(serial),)).fetchone():
                    outcome = RevocationOutcome.ALREADY_REVOKED
            conn.execute(
                "INSERT INTO intune_revocations (request_context, serial_text, outcome, received_at)"
                " VALUES (?, ?, ?, ?)",
                (request_context, serial_text, outcome.value, at),
            )
            row: sqlite3.Row = conn.execute(
                "SELECT * FROM intune_revocations WHERE request_context = ?", (request_context,)
            ).fetchone()
            return row, True

        row, created = await self._run(lambda conn: _write(conn, apply))
        return _revocation(row), created

    async def unuploaded_revocation_requests(self) -> list[RevocationRequestRecord]:
        rows = await self._run(
            lambda conn: conn.execute(
                "SELECT * FROM intune_revocations WHERE uploaded_at IS NULL ORDER BY received_at, request_context"
            ).fetchall()
        )
        return [_revocation(row) for row in rows]

    async def mark_revocation_uploaded(self, request_contexts: list[str], when: dt.datetime) -> None:
        at = encode_time(when)

        def mark(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE intune_revocations SET uploaded_at = ? WHERE request_context = ?",
                [(at, context) for context in request_contexts],
            )

        await self._run(lambda conn: _write(conn, mark))

    # -- CRL ------------------------------------------------------------------

    async def revoked_entries(self, *, valid_after: dt.datetime | None = None) -> list[RevokedEntry]:
        # `not_after > ''` holds for every row: one statement, one index (certificates_revoked).
        since = encode_time(valid_after) if valid_after is not None else ""

        def read(conn: sqlite3.Connection) -> list[RevokedEntry]:
            # Converted in the thread too: 200,000 rows are most of a second of Python.
            cursor = conn.execute(
                "SELECT serial, revoked_at, revocation_reason FROM certificates INDEXED BY certificates_revoked"
                " WHERE status = 'revoked' AND not_after > ? ORDER BY revoked_at, serial",
                (since,),
            )
            return [RevokedEntry(int(serial, 16), decode_time(at), reason) for serial, at, reason in cursor]

        return await self._run(read)

    async def revocation_state(self) -> RevocationState:
        row = await self._run(
            lambda conn: conn.execute(
                "SELECT (SELECT coalesce(max(n), 0) FROM certificate_counts WHERE status = 'revoked'),"
                " (SELECT max(revoked_at) FROM certificates INDEXED BY certificates_revoked WHERE status = 'revoked')"
            ).fetchone()
        )
        return RevocationState(row[0], decode_time(row[1]) if row[1] is not None else None)

    async def next_crl_number(self) -> int:
        def bump(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO crl_state (id, number) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET number = number + 1"
            )
            number: int = conn.execute("SELECT number FROM crl_state WHERE id = 1").fetchone()[0]
            return number

        return await self._run(lambda conn: _write(conn, bump))

    async def save_crl(self, number: int, der: bytes) -> None:
        # A slower writer never replaces a newer CRL with an older one.
        await self._execute(
            "INSERT INTO crl_current (id, number, der) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET number = excluded.number, der = excluded.der"
            " WHERE excluded.number > crl_current.number",
            (number, bytes(der)),
        )

    async def latest_crl(self) -> bytes | None:
        row = await self._run(lambda conn: conn.execute("SELECT der FROM crl_current WHERE id = 1").fetchone())
        return bytes(row[0]) if row is not None else None

    # -- requests held for approval --------------------------------------------

    async def hold_request(self, record: PendingRecord) -> tuple[PendingRecord, bool]:
        row: tuple[Any, ...] = (
            record.transaction_id,
            record.csr_sha256,
            bytes(record.csr_der),
            bytes(record.signer_der),
            record.subject,
            record.endpoint,
            record.profile,
            record.challenge_mode,
            record.message_type,
            encode_serial(record.renewal_of) if record.renewal_of is not None else None,
            encode_time(record.received_at),
            encode_time(record.expires_at),
            PendingStatus.PENDING.value,
        )
        columns = (
            "transaction_id, csr_sha256, csr_der, signer_der, subject, endpoint, profile, challenge_mode,"
            " message_type, renewal_of, received_at, expires_at, status"
        )

        def hold(conn: sqlite3.Connection) -> tuple[sqlite3.Row, bool]:
            new = (
                conn.execute(
                    f"INSERT INTO pending_requests ({columns}) VALUES ({', '.join('?' * len(row))})"
                    " ON CONFLICT (transaction_id, csr_sha256) DO NOTHING",
                    row,
                ).rowcount
                == 1
            )
            held: sqlite3.Row = conn.execute(
                f"SELECT {_PENDING_COLUMNS} FROM pending_requests WHERE transaction_id = ? AND csr_sha256 = ?",
                (record.transaction_id, record.csr_sha256),
            ).fetchone()
            return held, new

        held, new = await self._run(lambda conn: _write(conn, hold))
        return _pending(held), new

    async def find_pending(self, transaction_id: str, csr_sha256: str | None = None) -> PendingRecord | None:
        where, args = "transaction_id = ?", [transaction_id]
        if csr_sha256 is not None:
            where, args = where + " AND csr_sha256 = ?", [transaction_id, csr_sha256]
        query = f"SELECT {_PENDING_COLUMNS} FROM pending_requests WHERE {where} ORDER BY id DESC LIMIT 1"
        row = await self._run(lambda conn: conn.execute(query, args).fetchone())
        return _pending(row) if row is not None else None

    async def get_pending(self, request_id: int) -> PendingRecord | None:
        query = f"SELECT {_PENDING_COLUMNS} FROM pending_requests WHERE id = ?"
        row = await self._run(lambda conn: conn.execute(query, (request_id,)).fetchone())
        return _pending(row) if row is not None else None

    async def list_pending(self, status: PendingStatus | None = None, limit: int = 100) -> list[PendingRecord]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        where, args = ("", (limit,)) if status is None else ("WHERE status = ?", (PendingStatus(status).value, limit))
        query = f"SELECT {_PENDING_COLUMNS} FROM pending_requests {where} ORDER BY id DESC LIMIT ?"
        rows = await self._run(lambda conn: conn.execute(query, args).fetchall())
        return [_pending(row) for row in rows]

    async def decide_pending(
        self, request_id: int, approve: bool, reason: str, now: dt.datetime
    ) -> PendingRecord | None:
        status = PendingStatus.APPROVED if approve else PendingStatus.REJECTED
        at = encode_time(now)

        def decide(conn: sqlite3.Connection) -> sqlite3.Row | None:
            # One UPDATE decides, so two operators (or an operator and the expiry) cannot both win.
            changed = conn.execute(
                "UPDATE pending_requests SET status = ?, decided_at = ?, reason = ?"
                " WHERE id = ? AND status = 'pending' AND expires_at > ?",
                (status.value, at, reason, request_id, at),
            ).rowcount
            if changed != 1:
                return None
            row: sqlite3.Row = conn.execute(
                f"SELECT {_PENDING_COLUMNS} FROM pending_requests WHERE id = ?", (request_id,)
            ).fetchone()
            return row

        row = await self._run(lambda conn: _write(conn, decide))
        return _pending(row) if row is not None else None

    async def mark_pending_issued(self, request_id: int, serial: int) -> None:
        await self._execute(
            "UPDATE pending_requests SET status = 'issued', serial = ?"
            " WHERE id = ? AND status IN ('approved', 'issued')",
            (encode_serial(serial), request_id),
        )

    async def expire_pending(self, now: dt.datetime) -> int:
        at = encode_time(now)
        return await self._execute(
            "UPDATE pending_requests SET status = 'expired', decided_at = ?"
            " WHERE status = 'pending' AND expires_at <= ?",
            (at, at),
        )

    # -- health and metrics ---------------------------------------------------

    async def certificate_counts(self) -> dict[str, int]:
        """Certificates by status, for the metrics gauges."""
        rows = await self._run(lambda conn: conn.execute("SELECT status, n FROM certificate_counts").fetchall())
        counts = {status.value: 0 for status in CertStatus}
        counts.update({row[0]: row[1] for row in rows})
        return counts

    async def pending_count(self, now: dt.datetime) -> int:
        """Requests still waiting for a decision (unexpired), for the metrics gauge."""
        row = await self._run(
            lambda conn: conn.execute(
                "SELECT count(*) FROM pending_requests WHERE status = 'pending' AND expires_at > ?",
                (encode_time(now),),
            ).fetchone()
        )
        return int(row[0])

    # -- health ---------------------------------------------------------------

    async def ping(self) -> None:
        """Commit a one-row write: proves the file is writable and the lock obtainable."""
        await self._execute(
            "INSERT OR REPLACE INTO health (id, checked_at) VALUES (1, ?)",
            (encode_time(dt.datetime.now(dt.UTC)),),
        )
