from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from scepd.health import Check
from scepd.store.base import (
    MAX_SERIAL,
    CertificateRecord,
    CertStatus,
    RevocationState,
    SerialCollision,
    StoreCounts,
    StoreError,
)
from scepd.store.sqlite import MIGRATIONS, SqliteStore
from tests.store.backend import first, set_read_only, set_recent_commit

UTC = dt.UTC
NOW = dt.datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
DIGEST = "ab" * 32
FAR = "2100-01-01T00:00:00.000000Z"  # a time literal both backends read


def record(serial: int, **changes: object) -> CertificateRecord:
    fields: dict[str, object] = {
        "serial": serial,
        "transaction_id": f"tx-{serial:x}",
        "subject": "CN=device-1,O=Example",
        "requester": "CN=device-1",
        "csr_sha256": "cd" * 32,
        "profile": "default",
        "not_before": NOW - dt.timedelta(minutes=5),
        "not_after": NOW + dt.timedelta(days=365),
        "issued_at": NOW,
        "status": CertStatus.VALID,
        "der": b"\x30\x03\x02\x01" + str(serial).encode(),
    }
    fields.update(changes)
    return CertificateRecord(**fields)  # type: ignore[arg-type]


async def test_put_get_round_trip_keeps_every_field(store: SqliteStore) -> None:
    serial = MAX_SERIAL  # full 160 bits: would overflow an SQLite INTEGER
    rec = record(serial, renewal_of=None, profile="wifi")
    await store.put_issued(rec)
    got = await store.get(serial)
    assert got == rec
    assert got is not None and got.not_after.tzinfo is not None
    assert got.not_after.utcoffset() == dt.timedelta(0)


async def test_serial_is_stored_as_lower_case_hex(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SqliteStore.open(path) as store:
        await store.put_issued(record(0xABCDEF0123))
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT serial FROM certificates").fetchall() == [("abcdef0123",)]


async def test_non_utc_times_come_back_as_the_same_instant_in_utc(store: SqliteStore) -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    rec = record(7, issued_at=NOW.astimezone(cet))
    await store.put_issued(rec)
    got = await store.get(7)
    assert got is not None and got.issued_at == NOW and got.issued_at.tzinfo == UTC


async def test_naive_datetimes_and_bad_serials_are_refused(store: SqliteStore) -> None:
    with pytest.raises(ValueError):
        await store.put_issued(record(8, issued_at=NOW.replace(tzinfo=None)))
    for bad in (0, -1, MAX_SERIAL + 1):
        with pytest.raises(ValueError):
            await store.put_issued(record(bad))
    assert await store.list_certificates() == []
    assert await store.get(MAX_SERIAL + 1) is None  # a client may ask; nothing is there


async def test_duplicate_serial_raises_serial_collision_and_keeps_the_first(store: SqliteStore) -> None:
    await store.put_issued(record(42, transaction_id="first"))
    with pytest.raises(SerialCollision) as info:
        await store.put_issued(record(42, transaction_id="second"))
    assert info.value.serial == 42
    got = await store.get(42)
    assert got is not None and got.transaction_id == "first"


async def test_renewal_of_must_name_a_stored_certificate(store: SqliteStore) -> None:
    await store.put_issued(record(1))
    await store.put_issued(record(2, renewal_of=1))
    got = await store.get(2)
    assert got is not None and got.renewal_of == 1
    with pytest.raises(StoreError) as info:  # foreign key, not a serial collision
        await store.put_issued(record(3, renewal_of=999))
    assert not isinstance(info.value, SerialCollision)


async def test_find_by_transaction_needs_same_transaction_and_csr(store: SqliteStore) -> None:
    await store.put_issued(record(10, transaction_id="tx", csr_sha256="11" * 32))
    await store.put_issued(record(11, transaction_id="tx-other", csr_sha256="11" * 32))
    found = await store.find_by_transaction("tx", "11" * 32)
    assert found is not None and found.serial == 10
    assert await store.find_by_transaction("tx", "22" * 32) is None
    assert await store.find_by_transaction("nope", "11" * 32) is None


async def test_find_by_transaction_returns_the_latest_issue(store: SqliteStore) -> None:
    await store.put_issued(record(20, transaction_id="tx", csr_sha256="11" * 32))
    await store.put_issued(record(21, transaction_id="tx", csr_sha256="11" * 32))
    found = await store.find_by_transaction("tx", "11" * 32)
    assert found is not None and found.serial == 21


async def test_revoke_semantics(store: SqliteStore) -> None:
    await store.put_issued(record(5))
    when = NOW + dt.timedelta(days=1)
    assert await store.revoke(5, "keyCompromise", when) is True
    got = await store.get(5)
    assert got is not None
    assert (got.status, got.revoked_at, got.revocation_reason) == (CertStatus.REVOKED, when, "keyCompromise")
    # Already revoked: no change, the first revocation stands.
    assert await store.revoke(5, "superseded", when + dt.timedelta(days=1)) is False
    again = await store.get(5)
    assert again == got
    assert await store.revoke(6, "keyCompromise", when) is False  # unknown


async def test_superseded_can_still_be_revoked_but_revoked_is_not_superseded(store: SqliteStore) -> None:
    await store.put_issued(record(1))
    await store.put_issued(record(2))
    assert await store.mark_superseded(1) is True
    assert await store.mark_superseded(1) is False
    assert await store.revoke(1, "cessationOfOperation", NOW) is True
    assert await store.revoke(2, "keyCompromise", NOW) is True
    assert await store.mark_superseded(2) is False
    got = await store.get(2)
    assert got is not None and got.status is CertStatus.REVOKED
    assert await store.mark_superseded(3) is False


async def test_list_certificates_filters_and_limits_newest_first(store: SqliteStore) -> None:
    for serial in range(1, 6):
        await store.put_issued(record(serial))
    await store.revoke(2, "keyCompromise", NOW)
    await store.mark_superseded(3)
    assert [r.serial for r in await store.list_certificates()] == [5, 4, 3, 2, 1]
    assert [r.serial for r in await store.list_certificates(limit=2)] == [5, 4]
    assert [r.serial for r in await store.list_certificates(CertStatus.VALID)] == [5, 4, 1]
    assert [r.serial for r in await store.list_certificates(CertStatus.REVOKED)] == [2]
    assert [r.serial for r in await store.list_certificates(CertStatus.SUPERSEDED)] == [3]
    with pytest.raises(ValueError):
        await store.list_certificates(limit=0)


async def test_search_matches_subject_requester_transaction_and_serial_prefix(store: SqliteStore) -> None:
    await store.put_issued(record(0xABC1, subject="CN=laptop-7,O=Example", requester="CN=laptop-7"))
    await store.put_issued(record(0xABC2, subject="CN=printer-2,O=Example", requester="CN=old printer"))
    await store.put_issued(record(0xDEF3, subject="CN=100%_real", transaction_id="tx-exact"))
    await store.revoke(0xABC2, "keyCompromise", NOW)

    async def found(text: str, status: CertStatus | None = None) -> list[int]:
        return [r.serial for r in await store.list_certificates(status, search=text)]

    assert await found("LAPTOP") == [0xABC1]  # case-insensitive text
    assert await found("old printer") == [0xABC2]  # the requester
    assert await found("tx-exact") == [0xDEF3]
    assert await found("tx-ex") == []  # transaction IDs match whole
    assert await found("abc") == [0xABC2, 0xABC1]  # serial prefix, newest first
    assert await found("0xAB:C1") == [0xABC1]
    assert await found("abc", CertStatus.VALID) == [0xABC1]
    assert await found("100%_") == [0xDEF3]  # LIKE wildcards are taken literally
    assert await found("%") == [0xDEF3]


async def test_challenge_is_consumed_once_only(store: SqliteStore) -> None:
    await store.add_challenge(DIGEST, NOW + dt.timedelta(hours=1), note="laptop 7")
    assert await store.consume_challenge(DIGEST, NOW) is True
    assert await store.consume_challenge(DIGEST, NOW) is False
    assert await store.consume_challenge(DIGEST, NOW + dt.timedelta(seconds=1)) is False


async def test_unknown_challenge_is_refused(store: SqliteStore) -> None:
    assert await store.consume_challenge("cd" * 32, NOW) is False


async def test_expired_challenge_is_refused_and_stays_unused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    expires = NOW + dt.timedelta(hours=1)
    async with SqliteStore.open(path) as store:
        await store.add_challenge(DIGEST, expires)
        assert await store.consume_challenge(DIGEST, expires) is False  # expiry instant is already too late
        assert await store.consume_challenge(DIGEST, expires + dt.timedelta(days=1)) is False
        assert await store.consume_challenge(DIGEST, expires - dt.timedelta(microseconds=1)) is True
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT used_at IS NOT NULL FROM challenges").fetchall() == [(1,)]


async def test_challenge_expiry_compares_instants_across_offsets(store: SqliteStore) -> None:
    await store.add_challenge(DIGEST, NOW)
    later_elsewhere = (NOW + dt.timedelta(minutes=1)).astimezone(dt.timezone(dt.timedelta(hours=-8)))
    assert await store.consume_challenge(DIGEST, later_elsewhere) is False


async def test_add_challenge_takes_only_a_digest(store: SqliteStore) -> None:
    for not_a_digest in ("plaintext-challenge", "AB" * 32, "ab" * 31):
        with pytest.raises(ValueError):
            await store.add_challenge(not_a_digest, NOW)


async def test_200_concurrent_inserts_are_all_stored(store: SqliteStore) -> None:
    serials = {secrets.randbits(159) + 1 for _ in range(200)}
    async with trio.open_nursery() as nursery:
        for serial in serials:
            nursery.start_soon(store.put_issued, record(serial))
    stored = await store.list_certificates(limit=1000)
    assert {r.serial for r in stored} == serials
    for serial in list(serials)[:10]:
        assert await store.get(serial) is not None


async def test_50_concurrent_consumers_of_one_challenge_exactly_one_wins(store: SqliteStore) -> None:
    await store.add_challenge(DIGEST, NOW + dt.timedelta(hours=1))
    results: list[bool] = []

    async def consume() -> None:
        results.append(await store.consume_challenge(DIGEST, NOW))

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(consume)
    assert len(results) == 50
    assert results.count(True) == 1


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    async with SqliteStore.open(path) as store:
        await store.put_issued(record(99))
        await store.add_challenge(DIGEST, NOW + dt.timedelta(hours=1))
        await store.revoke(99, "keyCompromise", NOW)
    async with SqliteStore.open(path) as store:
        got = await store.get(99)
        assert got is not None and got.status is CertStatus.REVOKED and got.der == record(99).der
        assert await store.consume_challenge(DIGEST, NOW) is True
    async with SqliteStore.open(path) as store:
        assert await store.consume_challenge(DIGEST, NOW) is False


@pytest.mark.sqlite_only
async def test_wal_full_sync_and_foreign_keys_are_set(store: SqliteStore) -> None:
    def pragmas(conn: sqlite3.Connection) -> tuple[str, int, int]:
        return (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0],
            conn.execute("PRAGMA foreign_keys").fetchone()[0],
        )

    assert await store.database.run(pragmas) == ("wal", 2, 1)  # synchronous 2 = FULL


async def test_wal_mode_is_persistent_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    async with SqliteStore.open(path):
        pass
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_schema_version_is_recorded_and_migrations_are_not_rerun(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    for _ in range(2):  # the second open must not try to create the tables again
        async with SqliteStore.open(path):
            pass
    with sqlite3.connect(path) as db:
        versions = [v for (v,) in db.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == [v for v, _ in MIGRATIONS]


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    async with SqliteStore.open(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version VALUES (?, '2099-01-01T00:00:00.000000Z')", (MIGRATIONS[-1][0] + 1,))
    with pytest.raises(StoreError, match="schema version"):
        async with SqliteStore.open(path):
            pass


async def test_ping_commits_a_write(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    async with SqliteStore.open(path) as store:
        await store.ping()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM health").fetchone()[0] == 1


async def test_ping_fails_when_the_file_is_read_only(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    async with SqliteStore.open(path) as store:
        await store.database.run(lambda conn: conn.execute("PRAGMA query_only = ON"))
        with pytest.raises(StoreError):
            await store.ping()


async def _health_row(store: SqliteStore) -> str | None:
    row = await store.database.read(lambda conn: conn.execute("SELECT checked_at FROM health").fetchone())
    return None if row is None else str(first(row))


async def test_ping_counts_a_write_committed_just_before_and_nothing_else(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readiness's store probe does not queue its own write behind busy writers when one just committed;
    an older commit, or reads alone, do not count."""
    set_recent_commit(monkeypatch, 0.3)
    await store.ping()  # nothing committed yet: the probe writes
    first = await _health_row(store)
    assert first is not None
    await trio.sleep(0.35)
    await store.put_issued(record(1))
    await store.ping()
    assert await _health_row(store) == first  # the put just committed: no write of its own
    await trio.sleep(0.35)
    assert await store.get(1) is not None and await store.counts(NOW)  # reads prove nothing
    await store.ping()
    assert await _health_row(store) not in (None, first)


async def test_ping_after_a_failed_write_writes_however_recent_the_last_commit(store: SqliteStore) -> None:
    await store.put_issued(record(1))
    await set_read_only(store, True)
    with pytest.raises(StoreError):
        await store.put_issued(record(2))
    with pytest.raises(StoreError) as failed:
        await store.ping()  # the commit of record 1 is recent, but a write failed since
    assert failed.value.kind == "readonly"


async def test_a_hung_write_fails_the_store_check_once_the_last_commit_is_old(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_recent_commit(monkeypatch, 0.3)
    await store.put_issued(record(1))
    release = threading.Event()
    check = Check("store", store.ping, timeout=0.3, cache_ok=0, cache_failed=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.database.write, lambda conn: release.wait(10))
        await trio.testing.wait_all_tasks_blocked()
        assert (await check.run()).ok  # the commit of record 1 counts
        await trio.sleep(0.35)
        result = await check.run()  # too old: the probe's write waits behind the hung one
        release.set()
    assert (result.ok, result.reason) == (False, "no answer within 0.3 s")
    assert (await check.run()).ok


async def test_gauges_are_read_beside_a_write_in_progress(store: SqliteStore) -> None:
    """The counts a scrape reads do not wait for a write in flight (nor see it before it commits)."""
    await store.put_issued(record(1))
    release = threading.Event()

    def supersede(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE certificates SET status = 'superseded'")
        release.wait(10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.database.write, supersede)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(2):
            assert await store.counts(NOW) == StoreCounts({"valid": 1, "revoked": 0, "superseded": 0}, 0)
        release.set()
    assert (await store.counts(NOW)).certificates == {"valid": 0, "revoked": 0, "superseded": 1}  # seen at once


async def test_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = await SqliteStore.connect(tmp_path / "x.db")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.get(1)
    with pytest.raises(StoreError, match="closed"):
        await store.counts(NOW)  # the reader too


async def test_cancelled_caller_does_not_break_the_connection(store: SqliteStore) -> None:
    with trio.move_on_after(0):
        await store.put_issued(record(1))
    # Whether or not the insert ran, the connection is usable and not stuck in a transaction.
    await store.put_issued(record(2))
    assert await store.get(2) is not None


async def test_the_store_threads_are_named_in_the_os(store: SqliteStore) -> None:
    """`top -H`, py-spy and bench/loadgen.py's CPU split tell the store's threads apart by their OS name."""
    await store.get(1)  # the write connection's thread has run a call
    await store.counts(NOW)  # and the reader's
    names = {Path(task, "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()}
    assert {"scepd-store", "scepd-store-rea"} <= names, names  # the kernel keeps 15 bytes


async def test_calls_run_in_the_order_they_were_queued(store: SqliteStore) -> None:
    seen: list[int] = []

    def step(n: int) -> None:
        seen.append(n)

    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(store.database.run, lambda conn, n=n: step(n))
            await trio.lowlevel.checkpoint()  # each task queues its call before the next starts
    assert seen == list(range(50))


async def test_queued_calls_do_not_wait_for_a_busy_event_loop(store: SqliteStore) -> None:
    """The connection goes from one call to the next by itself: a busy event loop (here, one
    that blocks outright) does not leave the store idle between calls."""
    started: list[float] = []
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(store.database.run, lambda conn: started.append(time.monotonic()))
        await trio.testing.wait_all_tasks_blocked()  # all three are waiting for the store now
        time.sleep(0.3)  # the loop is busy elsewhere
        busy_until = time.monotonic()
    assert len(started) == 3 and max(started) < busy_until


async def test_call_cancelled_while_queued_never_runs(store: SqliteStore) -> None:
    release = threading.Event()
    ran: list[str] = []
    async with trio.open_nursery() as nursery:
        # The connection's thread is busy with this one until released.
        nursery.start_soon(store.database.run, lambda conn: release.wait(10))
        await trio.sleep(0.05)
        with trio.move_on_after(0.05) as scope:
            await store.database.run(lambda conn: ran.append("queued"))
        assert scope.cancelled_caught
        release.set()
    await store.database.run(lambda conn: ran.append("after"))
    assert ran == ["after"]


async def test_call_cancelled_while_running_still_commits(store: SqliteStore) -> None:
    started, release = threading.Event(), threading.Event()

    def slow_insert(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)
        # Literals only: the same statement on either backend.
        conn.execute(f"INSERT INTO challenges (digest, expires_at, note) VALUES ('{DIGEST}', '{FAR}', 'kept')")

    async def cancel_once_running(scope: trio.CancelScope) -> None:
        await trio.to_thread.run_sync(started.wait, 10)
        scope.cancel()
        release.set()

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(cancel_once_running, scope)
            await store.database.write(slow_insert)
        # The caller waited for its transaction although it was cancelled: the row is there.
    note = await store.database.run(lambda conn: conn.execute("SELECT note FROM challenges").fetchone())
    assert first(note) == "kept"


# -- Intune notifications, revocation requests, CRL --------------------------


async def test_notifications_are_kept_newest_first(store: SqliteStore) -> None:
    from scepd.store.base import NotificationKind, NotificationRecord

    first = NotificationRecord("tx-1", 0x1234, NotificationKind.SUCCESS, True, "Success", NOW)
    second = NotificationRecord("tx-2", None, NotificationKind.FAILURE, False, "HTTP 500", NOW)
    await store.record_notification(first)
    await store.record_notification(second)
    assert await store.notifications() == [second, first]
    assert await store.notifications("tx-1") == [first]


async def test_revocation_request_applies_once_and_remembers_outcome(store: SqliteStore) -> None:
    from scepd.store.base import RevocationOutcome

    await store.put_issued(record(0xABC))
    later = NOW + dt.timedelta(hours=1)
    got, created = await store.apply_revocation_request("ctx-1", "0ABC", 0xABC, "cessationOfOperation", later)
    assert created and got.outcome is RevocationOutcome.REVOKED and got.uploaded_at is None
    cert = await store.get(0xABC)
    assert cert is not None and cert.status is CertStatus.REVOKED
    assert cert.revocation_reason == "cessationOfOperation" and cert.revoked_at == later
    # Re-offered by Intune (not yet acknowledged): the first outcome, not a "conflict".
    again, created = await store.apply_revocation_request("ctx-1", "0ABC", 0xABC, "cessationOfOperation", later)
    assert not created and again.outcome is RevocationOutcome.REVOKED
    # A different request for the same certificate is a conflict; an unknown serial is not found.
    dup, _ = await store.apply_revocation_request("ctx-2", "abc", 0xABC, "cessationOfOperation", later)
    assert dup.outcome is RevocationOutcome.ALREADY_REVOKED
    missing, _ = await store.apply_revocation_request("ctx-3", "FFFF", 0xFFFF, "cessationOfOperation", later)
    assert missing.outcome is RevocationOutcome.NOT_FOUND
    junk, _ = await store.apply_revocation_request("ctx-4", "not hex", None, "cessationOfOperation", later)
    assert junk.outcome is RevocationOutcome.NOT_FOUND
    pending = await store.unuploaded_revocation_requests()
    assert [r.request_context for r in pending] == ["ctx-1", "ctx-2", "ctx-3", "ctx-4"]
    await store.mark_revocation_uploaded(["ctx-1", "ctx-3"], later)
    assert [r.request_context for r in await store.unuploaded_revocation_requests()] == ["ctx-2", "ctx-4"]
    entries = await store.revoked_entries()
    assert [(e.serial, e.reason) for e in entries] == [(0xABC, "cessationOfOperation")]


async def test_crl_number_is_monotonic_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "crl.db"
    async with SqliteStore.open(path) as s:
        assert [await s.next_crl_number() for _ in range(3)] == [1, 2, 3]
    async with SqliteStore.open(path) as s:
        assert await s.next_crl_number() == 4


async def test_revocation_state_changes_with_every_revocation(store: SqliteStore) -> None:
    assert await store.revocation_state() == RevocationState(0, None)
    for serial in (1, 2, 3):
        await store.put_issued(record(serial))
    await store.mark_superseded(3)
    assert await store.revocation_state() == RevocationState(0, None)
    await store.revoke(1, "keyCompromise", NOW)
    first = await store.revocation_state()
    assert first == RevocationState(1, NOW)
    # Even a revocation backdated before the latest one changes the fingerprint (the count).
    await store.revoke(2, "superseded", NOW - dt.timedelta(days=1))
    assert await store.revocation_state() == RevocationState(2, NOW)
    await store.revoke(2, "keyCompromise", NOW + dt.timedelta(days=1))  # already revoked: no change
    assert await store.revocation_state() == RevocationState(2, NOW)


async def test_put_issued_once_keeps_the_first_certificate_for_a_request(store: SqliteStore) -> None:
    """Two serving processes issuing copies of one request: the second store write loses, and learns the first."""
    assert await store.put_issued(record(30, transaction_id="tx-once", csr_sha256="33" * 32), once=True) is None
    earlier = await store.put_issued(record(31, transaction_id="tx-once", csr_sha256="33" * 32), once=True)
    assert earlier is not None and earlier.serial == 30
    assert await store.get(31) is None
    # Another CSR under the same transaction is another request.
    assert await store.put_issued(record(32, transaction_id="tx-once", csr_sha256="44" * 32), once=True) is None


async def test_notified_issuers_are_the_names_sent_and_fill_in_older_rows(store: SqliteStore) -> None:
    """Every issuingCertificateAuthority a success notification carried, once each; a success recorded
    without one (an older row) gets its certificate's issuer; failures name none."""
    from scepd.store.base import NotificationKind, NotificationRecord
    from tests.support.pki import Ca, key, record_for

    old_ca = Ca("scepd old CA")
    cert = old_ca.issue(key().public_key(), "device-old", serial=0x77)
    await store.put_issued(record_for(cert, "tx-old"))
    success, failure = NotificationKind.SUCCESS, NotificationKind.FAILURE
    for record_ in (
        NotificationRecord("tx-1", 0x1234, success, True, "Success", NOW, issuer="CN=new CA"),
        NotificationRecord("tx-2", 0x1235, success, True, "Success", NOW, issuer="CN=new CA"),
        NotificationRecord("tx-3", None, failure, True, "Success", NOW, issuer=None),
        NotificationRecord("tx-old", 0x77, success, True, "Success", NOW, issuer=None),
    ):
        await store.record_notification(record_)
    old_name = old_ca.certificate.subject.rfc4514_string()
    expected = sorted(["CN=new CA", old_name])
    assert await store.notified_issuers() == expected
    assert [n.issuer for n in await store.notifications("tx-old")] == [old_name]
    assert await store.notified_issuers() == expected  # filled in once, read the same again
