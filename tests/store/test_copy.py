"""`scepd store copy`: an SQLite store filled through the real roles, copied into a real PostgreSQL database
(tests/support/postgres.py), and read back through the roles; refusals, the check before COMMIT, the command
as a real process with its exit codes, and a check that the copy knows every table and column of both schemas."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from scepd.challenge.onetime import challenge_digest
from scepd.store.base import (
    MAX_SERIAL,
    NotificationKind,
    NotificationRecord,
    PendingStatus,
    StoreError,
)
from scepd.store.copy import CRL_STATE, NOT_COPIED, TABLES, CopyMismatch, CopyRefused, Kind, copy_store, known_columns
from scepd.store.postgres import PostgresStore
from scepd.store.roles import Store
from scepd.store.sqlite import SqliteStore
from tests.store.test_pending import held
from tests.store.test_sqlite import NOW, record

LATER = NOW + dt.timedelta(hours=2)
BIG = MAX_SERIAL - 0x1234  # 20 octets: more than any integer column of either database holds
USED, UNUSED, EXPIRED = (challenge_digest(f"challenge-{n}") for n in range(3))


async def fill(store: Store) -> dict[str, int]:
    """Every kind of row the daemon writes, through the roles it writes them with; the pending ids by name."""
    await store.put_issued(record(0x11, profile="wifi"))
    await store.put_issued(record(BIG, transaction_id="tx-big", requester="CN=big,O=Example"))
    await store.put_issued(record(0x12, renewal_of=0x11, issued_at=NOW + dt.timedelta(minutes=1)))
    assert await store.mark_superseded(0x11)
    assert await store.revoke(BIG, "keyCompromise", NOW + dt.timedelta(minutes=3))
    await store.put_issued(record(0xABC, transaction_id="tx-intune"))

    await store.add_challenge(USED, NOW + dt.timedelta(hours=8), "handed to ops")
    await store.add_challenge(UNUSED, NOW + dt.timedelta(hours=8))
    await store.add_challenge(EXPIRED, NOW - dt.timedelta(hours=1), "too old")
    assert await store.consume_challenge(USED, NOW)

    ids = {}
    for name in ("approved", "rejected", "waiting", "expired", "issued"):
        expires = NOW - dt.timedelta(minutes=1) if name == "expired" else NOW + dt.timedelta(hours=1)
        request, new = await store.hold_request(held(f"tx-{name}", name.encode(), expires_at=expires))
        assert new
        ids[name] = request.id
    assert await store.decide_pending(ids["approved"], True, "ok by ops", NOW)
    assert await store.decide_pending(ids["rejected"], False, "unknown device", NOW)
    assert await store.decide_pending(ids["issued"], True, "", NOW)
    await store.put_issued(record(0x13, transaction_id="tx-issued"))
    await store.mark_pending_issued(ids["issued"], 0x13)
    assert await store.expire_pending(NOW) == 1

    success, failure = NotificationKind.SUCCESS, NotificationKind.FAILURE
    await store.record_notification(NotificationRecord("tx-intune", 0xABC, success, True, "Success", NOW, "CN=CA"))
    await store.record_notification(NotificationRecord("tx-bad", None, failure, False, "HTTP 500", NOW))
    await store.apply_revocation_request("ctx-1", "0ABC", 0xABC, "cessationOfOperation", NOW)
    await store.apply_revocation_request("ctx-2", "FFFF", 0xFFFF, "cessationOfOperation", NOW)
    await store.mark_revocation_uploaded(["ctx-1"], LATER)

    for _ in range(3):
        number = await store.next_crl_number()
        await store.save_crl(number, b"crl-%d" % number)
    await store.ping()
    return ids


async def read_back(store: Store, ids: dict[str, int]) -> dict[str, Any]:
    """What the roles read from a store `fill` wrote (without changing it)."""
    certificates = await store.list_certificates(limit=1000)
    return {
        "certificates": certificates,
        "by_serial": [await store.get(c.serial) for c in certificates],
        "by_transaction": [await store.find_by_transaction(c.transaction_id, c.csr_sha256) for c in certificates],
        "search": await store.list_certificates(search="CN=big"),
        "pending": await store.list_pending(limit=1000),
        "by_id": [await store.get_pending(i) for i in ids.values()],
        "find_pending": await store.find_pending("tx-waiting"),
        "notifications": await store.notifications(),
        "issuers": await store.notified_issuers(),
        "unuploaded": await store.unuploaded_revocation_requests(),
        "revoked": await store.revoked_entries(),
        "revocation_state": await store.revocation_state(),
        "crl": await store.latest_crl(),
        "counts": await store.counts(NOW),
    }


async def copy(source: Path, url: str) -> Any:
    return await trio.to_thread.run_sync(copy_store, source, url)


async def test_everything_reads_back_the_same_and_numbers_continue(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "scepd.sqlite3"
    async with SqliteStore.open(source) as lite:
        ids = await fill(lite)
        before = await read_back(lite, ids)
    report = await copy(source, postgres_url)
    assert (
        report.source.rows
        == report.target.rows
        == {
            "certificates": 5,
            "challenges": 3,
            "pending_requests": 5,
            "intune_notifications": 2,
            "intune_revocations": 2,
            "crl_current": 1,
        }
    )
    assert report.source.statuses == {"revoked": 2, "superseded": 1, "valid": 2}
    assert report.crl_number == 3

    async with PostgresStore.open(postgres_url) as pg:
        after = await read_back(pg, ids)
        for key, value in before.items():
            assert after[key] == value, key
        got = {r.id: r.status for r in after["pending"]}
        assert got[ids["expired"]] is PendingStatus.EXPIRED and got[ids["rejected"]] is PendingStatus.REJECTED
        big = await pg.get(BIG)
        assert big is not None and big.revocation_reason == "keyCompromise" and big.revoked_at is not None
        # One-time state came along: used stays used, expired stays refused, unused works once.
        assert not await pg.consume_challenge(USED, NOW)
        assert not await pg.consume_challenge(EXPIRED, NOW)
        assert await pg.consume_challenge(UNUSED, NOW)
        # Numbers continue above the source's: the CRL number, and the ids PostgreSQL generates.
        assert await pg.next_crl_number() == 4
        newer, new = await pg.hold_request(held("tx-after", b"after"))
        assert new and newer.id > max(ids.values())
        await pg.put_issued(record(0x99))
        assert (await pg.counts(NOW)).certificates == {"valid": 3, "revoked": 2, "superseded": 1}


async def test_a_daemon_still_writing_changes_nothing_the_copy_reads(tmp_path: Path, postgres_url: str) -> None:
    """The source is one snapshot: rows committed while the copy runs are not copied, and the counts it
    checks still agree. Those rows are lost to the new database, which is why the daemon must be stopped."""
    source = tmp_path / "scepd.sqlite3"
    async with SqliteStore.open(source) as lite:
        await fill(lite)

        def meanwhile(table: str, rows: int) -> None:
            # After the certificates are copied, before the tables after them are read: the daemon commits.
            if table == "certificates":
                trio.from_thread.run(lite.put_issued, record(0x5000, transaction_id="tx-late"))
                trio.from_thread.run(lite.add_challenge, challenge_digest("late"), LATER)
                trio.from_thread.run(lite.hold_request, held("tx-late", b"late"))
                trio.from_thread.run(lite.next_crl_number)

        report = await trio.to_thread.run_sync(lambda: copy_store(source, postgres_url, progress=meanwhile))
        assert report.target.rows["challenges"] == 3 and report.target.rows["pending_requests"] == 5
        assert report.source == report.target and report.crl_number == 3
        assert await lite.get(0x5000) is not None and await lite.find_pending("tx-late") is not None
    async with PostgresStore.open(postgres_url) as pg:
        assert await pg.get(0x5000) is None and await pg.find_pending("tx-late") is None
        assert not await pg.consume_challenge(challenge_digest("late"), NOW)


async def test_an_empty_store_copies_and_a_copy_never_merges(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "empty.sqlite3"
    async with SqliteStore.open(source):
        pass
    report = await copy(source, postgres_url)
    assert set(report.target.rows.values()) == {0} and report.crl_number == 0
    # The target now has the schema, still no rows: a second copy is allowed, and a filled one is not.
    async with SqliteStore.open(source) as lite:
        await lite.put_issued(record(1))
    await copy(source, postgres_url)
    with pytest.raises(CopyRefused, match="not empty: 1 in certificates;"):
        await copy(source, postgres_url)


async def test_a_target_with_data_is_refused_and_left_unchanged(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "scepd.sqlite3"
    async with SqliteStore.open(source) as lite:
        await fill(lite)
    async with PostgresStore.open(postgres_url) as pg:
        await pg.put_issued(record(0x77, transaction_id="live"))
        await pg.next_crl_number()
    with pytest.raises(CopyRefused, match="not empty"):
        await copy(source, postgres_url)
    async with PostgresStore.open(postgres_url) as pg:
        assert [c.serial for c in await pg.list_certificates()] == [0x77]
        assert await pg.list_pending() == [] and await pg.notifications() == []
        assert await pg.next_crl_number() == 2


async def test_only_a_crl_number_handed_out_is_enough_to_refuse(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "scepd.sqlite3"
    async with SqliteStore.open(source):
        pass
    async with PostgresStore.open(postgres_url) as pg:
        await pg.next_crl_number()  # a daemon ran here once and numbered a CRL
    with pytest.raises(CopyRefused, match="not empty: CRL number 1 handed out;"):
        await copy(source, postgres_url)


async def test_a_target_that_loses_rows_fails_the_check_and_nothing_is_committed(
    tmp_path: Path, postgres_url: str
) -> None:
    source = tmp_path / "scepd.sqlite3"
    async with SqliteStore.open(source) as lite:
        await fill(lite)
    async with PostgresStore.open(postgres_url):
        pass  # the current schema, empty
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # Something on the server eats challenges as they arrive: what the copy reads back differs.
        conn.execute(
            "CREATE FUNCTION eat() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN DELETE FROM challenges WHERE digest = NEW.digest; RETURN NULL; END $$"
        )
        conn.execute("CREATE TRIGGER eat AFTER INSERT ON challenges FOR EACH ROW EXECUTE FUNCTION eat()")
    with pytest.raises(CopyMismatch, match="challenges: 3 in the source, 0 in the target"):
        await copy(source, postgres_url)
    async with PostgresStore.open(postgres_url) as pg:
        assert await pg.list_certificates() == [] and await pg.latest_crl() is None
        assert await pg.next_crl_number() == 1


async def test_a_value_neither_codec_takes_stops_the_copy(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "scepd.sqlite3"
    async with SqliteStore.open(source) as lite:
        await fill(lite)
    with sqlite3.connect(source) as db:
        db.execute("UPDATE challenges SET used_at = 'yesterday' WHERE digest = ?", (USED,))
    with pytest.raises(StoreError, match="challenges.used_at") as caught:
        await copy(source, postgres_url)
    assert caught.value.kind == "corrupt"
    async with PostgresStore.open(postgres_url) as pg:
        assert await pg.list_certificates() == []


async def test_an_older_or_missing_source_is_refused(tmp_path: Path, postgres_url: str) -> None:
    with pytest.raises(FileNotFoundError):
        await copy(tmp_path / "missing.sqlite3", postgres_url)
    source = tmp_path / "old.sqlite3"
    async with SqliteStore.open(source):
        pass
    with sqlite3.connect(source) as db:
        db.execute("DELETE FROM schema_version WHERE version = (SELECT max(version) FROM schema_version)")
    with pytest.raises(StoreError, match="older than this scepd"):
        await copy(source, postgres_url)


# -- the copy knows every table and column of both schemas -----------------------------------

# How each backend declares a column of each kind (SQLite's declared type; PostgreSQL's data_type).
SQLITE_TYPES = {
    Kind.TEXT: {"TEXT"},
    Kind.SERIAL: {"TEXT"},
    Kind.TIME: {"TEXT"},
    Kind.INTEGER: {"INTEGER"},
    Kind.BYTES: {"BLOB"},
    Kind.BOOL: {"INTEGER"},
}
POSTGRES_TYPES = {
    Kind.TEXT: {"text"},
    Kind.SERIAL: {"text"},
    Kind.TIME: {"timestamp with time zone"},
    Kind.INTEGER: {"integer", "bigint"},
    Kind.BYTES: {"bytea"},
    Kind.BOOL: {"boolean"},
}


def drift(schema: dict[str, list[tuple[str, str]]], types: dict[Kind, set[str]]) -> list[str]:
    """Where a backend's schema (table -> [(column, type)]) and what the copy knows part ways."""
    known = {t.name: t for t in (*TABLES, CRL_STATE)}
    found = [
        f"table {name} is neither copied nor in NOT_COPIED"
        for name in schema
        if name not in known and name not in NOT_COPIED
    ]
    found += [f"NOT_COPIED names {name}, which is not a table" for name in NOT_COPIED if name not in schema]
    found += [f"the copy knows table {name}, which is not in the schema" for name in known if name not in schema]
    for name, table in known.items():
        columns = schema.get(name)
        if columns is None:
            continue
        if [c for c, _ in columns] != list(table.column_names):
            found.append(f"{name}: the schema has columns {[c for c, _ in columns]}, the copy {table.column_names}")
            continue
        declared = dict(columns)
        found += [
            f"{name}.{column}: declared {declared[column]}, the copy writes it as {kind.value}"
            for column, kind in table.columns
            if declared[column] not in types[kind]
        ]
    return found


def sqlite_schema(path: Path) -> dict[str, list[tuple[str, str]]]:
    with sqlite3.connect(path) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: [(r[1], r[2]) for r in db.execute(f"PRAGMA table_info({n})")] for n in names}


def postgres_schema(url: str) -> dict[str, list[tuple[str, str]]]:
    schema: dict[str, list[tuple[str, str]]] = {}
    with psycopg.connect(url) as conn:
        for table, column, kind in conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ):
            schema.setdefault(table, []).append((column, kind))
    return schema


async def test_the_copy_knows_every_table_and_column_of_both_schemas(tmp_path: Path, postgres_url: str) -> None:
    async with SqliteStore.open(tmp_path / "schema.sqlite3"), PostgresStore.open(postgres_url):
        pass
    lite, pg = sqlite_schema(tmp_path / "schema.sqlite3"), postgres_schema(postgres_url)
    assert drift(lite, SQLITE_TYPES) == []
    assert drift(pg, POSTGRES_TYPES) == []
    assert set(known_columns()) | set(NOT_COPIED) == set(lite) == set(pg)


def test_the_schema_check_sees_a_new_table_column_or_type() -> None:
    """`drift` itself: a migration that adds a column or a table, or changes a type, is caught."""
    base = {t.name: [(c, sorted(POSTGRES_TYPES[k])[0]) for c, k in t.columns] for t in (*TABLES, CRL_STATE)}
    base.update({name: [("x", "text")] for name in NOT_COPIED})
    assert drift(base, POSTGRES_TYPES) == []
    wider = {**base, "certificates": [*base["certificates"], ("key_id", "text")]}
    assert drift(wider, POSTGRES_TYPES) and "key_id" in drift(wider, POSTGRES_TYPES)[0]
    assert drift({**base, "audit_log": [("id", "bigint")]}, POSTGRES_TYPES) == [
        "table audit_log is neither copied nor in NOT_COPIED"
    ]
    retyped = {**base, "challenges": [("digest", "text"), ("expires_at", "text"), *base["challenges"][2:]]}
    assert drift(retyped, POSTGRES_TYPES) == ["challenges.expires_at: declared text, the copy writes it as time"]
    without = {k: v for k, v in base.items() if k != "crl_current"}
    assert drift(without, POSTGRES_TYPES) == ["the copy knows table crl_current, which is not in the schema"]


# -- the command, as a real process ---------------------------------------------------------------


def scepd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scepd", *args], capture_output=True, text=True, timeout=60, check=False
    )


async def run(*args: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: scepd(*args))


async def test_the_command_copies_then_refuses_and_says_so_in_its_exit_code(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "scepd.sqlite3"
    async with SqliteStore.open(source) as lite:
        ids = await fill(lite)
    config = tmp_path / "scepd.toml"
    config.write_text(
        '[token]\nlabel = "scepd"\npin = "env:SCEPD_UNUSED_PIN"\n'
        '[ca]\nkey = "pkcs11:object=ca"\ncertificate = "ca.pem"\n'
        '[challenge]\nstatic = "env:SCEPD_UNUSED"\n'
        '[store]\npath = "scepd.sqlite3"\n'
    )
    done = await run("store", "copy", "--config", str(config), "--to", postgres_url)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.strip()}
    assert lines["certificates"] == ["5", "5"] and lines["pending_requests"] == ["5", "5"]
    assert lines["revoked"] == ["2", "2"] and lines["crl"] == ["number", "3", "3"]
    assert "audit=store_copied" in done.stderr
    async with PostgresStore.open(postgres_url) as pg:
        assert (await pg.get_pending(ids["rejected"])).reason == "unknown device"  # type: ignore[union-attr]

    again = await run("store", "copy", "--config", str(config), "--to", postgres_url)
    assert again.returncode == 6, again.stderr
    assert "is not empty" in again.stderr and again.stderr.count("\n") == 1

    # --from names the file without a configuration; a password in --to is refused before anything runs.
    secret = postgres_url.replace("scepd@", "scepd:hunter2@")
    refused = await run("store", "copy", "--from", str(source), "--to", secret)
    assert refused.returncode == 2 and "must not contain a password" in refused.stderr
    assert "hunter2" not in refused.stderr
    missing = await run("store", "copy", "--from", str(tmp_path / "nope.sqlite3"), "--to", postgres_url)
    assert missing.returncode == 3 and "nope.sqlite3" in missing.stderr
    # A configuration already on PostgreSQL has no file to copy from: say so, and how to name one.
    config.write_text(config.read_text().replace('path = "scepd.sqlite3"', f'url = "{postgres_url}"'))
    moved = await run("store", "copy", "--config", str(config), "--to", postgres_url)
    assert moved.returncode == 2 and "name the SQLite file with --from" in moved.stderr


async def test_the_command_exits_7_when_the_check_fails(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "scepd.sqlite3"
    async with SqliteStore.open(source) as lite:
        await lite.put_issued(record(1))
        await lite.put_issued(record(2))
    async with PostgresStore.open(postgres_url):
        pass
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION twice() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " INSERT INTO certificate_counts (status, shard, n) VALUES ('valid', 99, 1)"
            " ON CONFLICT (status, shard) DO UPDATE SET n = certificate_counts.n + 1; RETURN NULL; END $$"
        )
        conn.execute("CREATE TRIGGER twice AFTER INSERT ON certificates FOR EACH ROW EXECUTE FUNCTION twice()")
    done = await run("store", "copy", "--from", str(source), "--to", postgres_url)
    assert done.returncode == 7, done.stderr
    assert "valid certificates: 2 in the source, 4 in the target" in done.stderr
    async with PostgresStore.open(postgres_url) as pg:
        assert await pg.list_certificates() == []
