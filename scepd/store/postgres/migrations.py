"""The schema of the PostgreSQL store, as the list of steps that build it.

Its own list, not SQLite's: the types differ (timestamptz, bytea, identity
columns) and PostgreSQL does in one step what SQLite needed several for. Each
migration runs once, in order, inside the transaction `migrate` is called in;
`schema_version` records which ran. Nodes starting together take an advisory
lock first, so one migrates and the others find it done. A database written by
a newer scepd is refused rather than misread.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import DictRow

from scepd.store.base import StoreError

# pg_advisory_xact_lock key: "scep" in ASCII; held only by `migrate`, until its transaction ends.
MIGRATION_LOCK = 0x73636570

# Counter rows per status: a certificate's insert adds 1 to the row of its backend's shard, so
# inserts from several connections (nodes) rarely wait for each other's row lock until commit.
COUNT_SHARDS = 16

# Each migration runs once, in one transaction, in order; append, never edit.
MIGRATIONS: Sequence[tuple[int, Sequence[str]]] = (
    (
        1,
        (
            """
            CREATE TABLE certificates (
                id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                serial            text NOT NULL UNIQUE CHECK (serial ~ '^[1-9a-f][0-9a-f]{0,39}$'),
                transaction_id    text NOT NULL,
                subject           text NOT NULL,
                requester         text NOT NULL,
                csr_sha256        text NOT NULL,
                profile           text NOT NULL,
                not_before        timestamptz NOT NULL,
                not_after         timestamptz NOT NULL,
                issued_at         timestamptz NOT NULL,
                status            text NOT NULL CHECK (status IN ('valid', 'revoked', 'superseded')),
                der               bytea NOT NULL,
                renewal_of        text REFERENCES certificates (serial),
                revoked_at        timestamptz,
                revocation_reason text
            )
            """,
            "CREATE INDEX certificates_by_transaction ON certificates (transaction_id, csr_sha256, id)",
            # Serial prefix search (`scepd certs --search`), whatever the database's collation.
            "CREATE INDEX certificates_serial_prefix ON certificates (serial text_pattern_ops)",
            # The CRL reads only revoked rows, in CRL order, from the index alone.
            "CREATE INDEX certificates_revoked ON certificates (revoked_at, serial)"
            " INCLUDE (not_after, revocation_reason) WHERE status = 'revoked'",
            "CREATE TABLE certificate_counts (status text NOT NULL, shard integer NOT NULL, n bigint NOT NULL,"
            " PRIMARY KEY (status, shard))",
            f"""
            CREATE FUNCTION certificate_counts_change() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                here integer := pg_backend_pid() % {COUNT_SHARDS};
            BEGIN
                IF TG_OP IN ('UPDATE', 'DELETE') THEN
                    INSERT INTO certificate_counts (status, shard, n) VALUES (OLD.status, here, -1)
                        ON CONFLICT (status, shard) DO UPDATE SET n = certificate_counts.n - 1;
                END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN
                    INSERT INTO certificate_counts (status, shard, n) VALUES (NEW.status, here, 1)
                        ON CONFLICT (status, shard) DO UPDATE SET n = certificate_counts.n + 1;
                END IF;
                RETURN NULL;
            END
            $$
            """,
            "CREATE TRIGGER certificate_counts_insert_delete AFTER INSERT OR DELETE ON certificates"
            " FOR EACH ROW EXECUTE FUNCTION certificate_counts_change()",
            "CREATE TRIGGER certificate_counts_update AFTER UPDATE OF status ON certificates"
            " FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION certificate_counts_change()",
            """
            CREATE TABLE challenges (
                digest     text PRIMARY KEY CHECK (digest ~ '^[0-9a-f]{64}$'),
                expires_at timestamptz NOT NULL,
                used_at    timestamptz,
                note       text NOT NULL DEFAULT ''
            )
            """,
            "CREATE TABLE health (id integer PRIMARY KEY CHECK (id = 1), checked_at timestamptz NOT NULL)",
            """
            CREATE TABLE intune_notifications (
                id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                transaction_id text NOT NULL,
                serial         text,
                kind           text NOT NULL CHECK (kind IN ('success', 'failure')),
                delivered      boolean NOT NULL,
                detail         text NOT NULL,
                at             timestamptz NOT NULL,
                issuer         text
            )
            """,
            "CREATE INDEX intune_notifications_tid ON intune_notifications (transaction_id, id)",
            "CREATE INDEX intune_notifications_issuer ON intune_notifications (kind, issuer)",
            """
            CREATE TABLE intune_revocations (
                request_context text PRIMARY KEY,
                serial_text     text NOT NULL,
                outcome         text NOT NULL CHECK (outcome IN ('revoked', 'not_found', 'already_revoked')),
                received_at     timestamptz NOT NULL,
                uploaded_at     timestamptz
            )
            """,
            "CREATE INDEX intune_revocations_unuploaded ON intune_revocations (received_at, request_context)"
            " WHERE uploaded_at IS NULL",
            # The CRL number: one row, bumped by UPDATE ... RETURNING, so it is as durable as any commit.
            "CREATE TABLE crl_state (id integer PRIMARY KEY CHECK (id = 1), number bigint NOT NULL)",
            "INSERT INTO crl_state (id, number) VALUES (1, 0)",
            "CREATE TABLE crl_current (id integer PRIMARY KEY CHECK (id = 1), number bigint NOT NULL,"
            " der bytea NOT NULL)",
            """
            CREATE TABLE pending_requests (
                id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                transaction_id text NOT NULL,
                csr_sha256     text NOT NULL,
                csr_der        bytea NOT NULL,
                signer_der     bytea NOT NULL,
                subject        text NOT NULL,
                endpoint       text NOT NULL,
                profile        text NOT NULL,
                challenge_mode text NOT NULL,
                message_type   text NOT NULL,
                renewal_of     text,
                received_at    timestamptz NOT NULL,
                expires_at     timestamptz NOT NULL,
                status         text NOT NULL
                               CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'issued')),
                decided_at     timestamptz,
                reason         text NOT NULL DEFAULT '',
                serial         text REFERENCES certificates (serial),
                UNIQUE (transaction_id, csr_sha256)
            )
            """,
            "CREATE INDEX pending_requests_by_status ON pending_requests (status, expires_at)",
        ),
    ),
    (
        2,
        (
            # Which node runs the once-per-deployment loops (scepd/leadership.py), and until when
            # by the server's clock.
            """
            CREATE TABLE leases (
                name        text PRIMARY KEY,
                holder      text NOT NULL,
                acquired_at timestamptz NOT NULL,
                expires_at  timestamptz NOT NULL
            )
            """,
        ),
    ),
    (
        3,
        (
            # Each node's key fingerprint and when it last said so (scepd/nodekeys.py), so the nodes
            # sharing this database notice one that signs or opens envelopes with other keys.
            """
            CREATE TABLE node_keys (
                node        text PRIMARY KEY,
                fingerprint text NOT NULL,
                seen_at     timestamptz NOT NULL
            )
            """,
        ),
    ),
)


def migrate(conn: psycopg.Connection[DictRow]) -> None:
    """Apply the migrations this database has not seen; the caller holds a transaction."""
    # A later migration may rebuild an index on millions of rows: not bound by the session's 30 s limit.
    conn.execute("SET LOCAL statement_timeout = 0")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL)"
    )
    row = conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_version").fetchone()
    current = int(row["v"]) if row is not None else 0
    latest = MIGRATIONS[-1][0]
    if current > latest:
        raise StoreError(f"the database has schema version {current}; this scepd knows up to {latest}")
    for version, steps in MIGRATIONS:
        if version <= current:
            continue
        for statement in steps:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (%s, now())", (version,))
