"""The schema of the SQLite store, as the list of steps that build it.

Each migration runs once, in order, inside the transaction `migrate` is called
in; `schema_version` records which ran. A store written by a newer scepd (a
version this list does not reach) is refused rather than misread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from scepd.clock import utc_now
from scepd.store.base import StoreError
from scepd.store.sqlite.codecs import encode_time

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
    (
        7,
        (
            # Who runs the once-per-deployment loops (scepd/leadership.py), and until when.
            """
            CREATE TABLE leases (
                name        TEXT PRIMARY KEY NOT NULL,
                holder      TEXT NOT NULL,
                acquired_at TEXT NOT NULL,
                expires_at  TEXT NOT NULL
            )
            """,
        ),
    ),
    (
        8,
        (
            # Each node's key fingerprint (scepd/nodekeys.py): the same table as on PostgreSQL.
            """
            CREATE TABLE node_keys (
                node        TEXT PRIMARY KEY NOT NULL,
                fingerprint TEXT NOT NULL,
                seen_at     TEXT NOT NULL
            )
            """,
        ),
    ),
)


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations this store has not seen; the caller holds a write transaction."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    latest = MIGRATIONS[-1][0]
    if current > latest:
        raise StoreError(f"the store has schema version {current}; this scepd knows up to {latest}")
    now = encode_time(utc_now())
    for version, statements in MIGRATIONS:
        if version <= current:
            continue
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, now))
