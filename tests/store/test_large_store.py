"""What keeps a large store cheap: counts kept by triggers (migration 5) and a CRL that leaves out
certificates expired for longer than one CRL lifetime."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from scepd.store.sqlite import MIGRATIONS, SqliteStore
from scepd.store.sqlite.connection import transaction
from tests.store.test_sqlite import NOW, record


async def test_counts_follow_issue_revoke_supersede_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "counts.db"
    async with SqliteStore.open(path) as store:
        assert (await store.counts(NOW)).certificates == {"valid": 0, "revoked": 0, "superseded": 0}
        for serial in range(1, 6):
            await store.put_issued(record(serial))
        await store.revoke(1, "keyCompromise", NOW)
        await store.revoke(1, "keyCompromise", NOW)  # already revoked: counted once
        await store.mark_superseded(2)
        assert (await store.counts(NOW)).certificates == {"valid": 3, "revoked": 1, "superseded": 1}
    with sqlite3.connect(path) as db:  # another writer (an admin tool, a second node) is counted too
        db.execute("DELETE FROM certificates WHERE serial = '5'")
        db.execute("UPDATE certificates SET status = 'revoked', revoked_at = revoked_at WHERE serial = '4'")
        rows = dict(db.execute("SELECT status, count(*) FROM certificates GROUP BY status").fetchall())
    async with SqliteStore.open(path) as store:
        counts = (await store.counts(NOW)).certificates
        assert counts == {"valid": rows["valid"], "revoked": rows["revoked"], "superseded": rows["superseded"]}
        assert counts == {"valid": 1, "revoked": 2, "superseded": 1}


def test_migration_5_counts_the_certificates_already_stored(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")

    def up_to_4(c: sqlite3.Connection) -> None:
        for version, statements in MIGRATIONS:
            if version <= 4:
                for statement in statements:
                    c.execute(statement)
                c.execute("INSERT INTO schema_version VALUES (?, 'x')", (version,))
        for serial, status in ((1, "valid"), (2, "valid"), (3, "revoked")):
            r = record(serial)
            c.execute(
                "INSERT INTO certificates (serial, transaction_id, subject, requester, csr_sha256, profile,"
                " not_before, not_after, issued_at, status, der) VALUES (?, ?, '', '', ?, '', '', '', '', ?, ?)",
                (f"{serial:x}", r.transaction_id, r.csr_sha256, status, r.der),
            )

    transaction(conn, up_to_4)
    conn.close()

    async def check() -> dict[str, int]:
        async with SqliteStore.open(path) as store:
            return (await store.counts(NOW)).certificates

    import trio

    assert trio.run(check) == {"valid": 2, "revoked": 1, "superseded": 0}


async def test_crl_entries_leave_out_certificates_expired_before_a_given_time(store: SqliteStore) -> None:
    day = dt.timedelta(days=1)
    await store.put_issued(record(1, not_after=NOW - 3 * day))  # expired long ago
    await store.put_issued(record(2, not_after=NOW - dt.timedelta(hours=1)))  # expired recently
    await store.put_issued(record(3, not_after=NOW + day))
    await store.put_issued(record(4, not_after=NOW + day))  # valid, not revoked
    for serial in (1, 2, 3):
        await store.revoke(serial, "superseded", NOW - dt.timedelta(minutes=serial))
    assert [e.serial for e in await store.revoked_entries()] == [3, 2, 1]
    assert [e.serial for e in await store.revoked_entries(valid_after=NOW - day)] == [3, 2]
    assert [e.serial for e in await store.revoked_entries(valid_after=NOW)] == [3]
    assert (await store.revocation_state()).count == 3
