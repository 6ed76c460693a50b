"""The PostgreSQL store's own workings, on a real server (tests/support/postgres.py): the session it
sets up, SQLSTATEs raised by the server and what they become, a lost connection, and above all several
processes writing one database at once, which is what this backend is for."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import multiprocessing
import multiprocessing.synchronize
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import trio

from scepd.store.base import CertStatus, PendingStatus, RevocationOutcome, SerialCollision, StoreError
from scepd.store.postgres import MIGRATIONS, PostgresStore
from scepd.store.postgres.connection import GRACE, unreachable
from scepd.store.postgres.watchdog import POLL
from tests.store.test_pending import held
from tests.store.test_sqlite import DIGEST, NOW, record
from tests.support.postgres import PostgresServer, frozen, postgres_server

ROUNDS = 60  # per process and per kind of race


async def test_session_is_utc_durable_and_read_committed(postgres_url: str) -> None:
    async with PostgresStore.open(postgres_url) as store:
        row = await store.database.run(
            lambda conn: conn.execute(
                "SELECT current_setting('TimeZone') AS tz, current_setting('synchronous_commit') AS sync,"
                " current_setting('transaction_isolation') AS iso, current_setting('statement_timeout') AS timeout"
            ).fetchone()
        )
    assert row == {"tz": "UTC", "sync": "on", "iso": "read committed", "timeout": "10s"}


async def test_schema_version_is_recorded_and_a_newer_schema_is_refused(postgres_url: str) -> None:
    async with PostgresStore.open(postgres_url) as store:
        versions = await store.database.run(
            lambda conn: [r["version"] for r in conn.execute("SELECT version FROM schema_version").fetchall()]
        )
        assert versions == [v for v, _ in MIGRATIONS]
    async with PostgresStore.open(postgres_url) as store:  # reopening migrates nothing twice
        await store.put_issued(record(1))
        again = await store.database.run(
            lambda conn: conn.execute("SELECT count(*) AS n FROM schema_version").fetchone()
        )
        assert again == {"n": len(MIGRATIONS)}
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (1000, now())")
    with pytest.raises(StoreError, match="schema version 1000"):
        await PostgresStore.connect(postgres_url)


async def _raise(store: PostgresStore, errcode: str) -> StoreError:
    """Have the server itself raise an error with this SQLSTATE inside a write."""
    sql = f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{errcode}'; END $$"
    with pytest.raises(StoreError) as failed:
        await store.database.write(lambda conn: conn.execute(sql))
    return failed.value


@pytest.mark.parametrize(
    ("errcode", "kind"),
    [
        ("53100", "full"),
        ("25006", "readonly"),
        ("58030", "io"),
        ("XX001", "corrupt"),
        ("55P03", "locked"),
        ("57P03", "cantopen"),
        ("23505", "constraint"),
        ("42601", "other"),
    ],
)
async def test_sqlstates_raised_by_the_server_become_kinds(postgres_url: str, errcode: str, kind: str) -> None:
    async with PostgresStore.open(postgres_url) as store:
        error = await _raise(store, errcode)
        assert (error.kind, errcode in str(error)) == (kind, True)
        if kind == "constraint":
            assert store.fault is None  # a bug in a query, not the database failing
        else:
            assert store.fault is error
            await store.ping()  # the next commit ends the episode
            assert store.fault is None


async def test_serialization_failures_are_run_again_and_give_up_after_the_last_attempt(postgres_url: str) -> None:
    async with PostgresStore.open(postgres_url) as store:
        attempts: list[int] = []

        def flaky(conn: Any) -> str:
            attempts.append(1)
            if len(attempts) < 3:
                conn.execute("DO $$ BEGIN RAISE EXCEPTION 'lost a race' USING ERRCODE = '40001'; END $$")
            conn.execute(f"INSERT INTO challenges (digest, expires_at) VALUES ('{DIGEST}', now())")
            return "done"

        assert await store.database.write(flaky) == "done"
        assert len(attempts) == 3
        rows = await store.database.run(lambda conn: conn.execute("SELECT count(*) AS n FROM challenges").fetchone())
        assert rows == {"n": 1}  # the failed attempts were rolled back

        attempts.clear()
        error = await _raise(store, "40P01")  # a deadlock every time
        assert error.kind == "locked"


async def test_a_lost_connection_is_made_again(postgres_url: str) -> None:
    async with PostgresStore.open(postgres_url) as store:
        await store.put_issued(record(1))
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            # Every other session on this database: the store's writer and reader.
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid != pg_backend_pid()"
            )
        # The writer finds its connection dead at BEGIN, reconnects and runs the call once.
        await store.put_issued(record(2))
        assert [c.serial for c in await store.list_certificates()] == [2, 1]
        assert (await store.counts(NOW)).certificates["valid"] == 2  # the reader too
        assert store.fault is None


async def test_a_frozen_session_fails_within_the_bound_and_is_made_again(postgres_url: str) -> None:
    """A backend that stops answering (SIGSTOP: the socket stays open, nothing comes back) holds no call
    longer than the session's statement_timeout plus GRACE, queued calls included; the connection is
    dropped and made again, and the calls after it work (the server itself still answers)."""
    url = postgres_url + "&options=-c%20statement_timeout%3D500"  # the URL's setting wins over the default
    bound = 0.5 + GRACE
    async with PostgresStore.open(url) as store:
        await store.put_issued(record(1))
        setting = await store.database.run(lambda conn: conn.execute("SHOW statement_timeout").fetchone())
        assert setting == {"statement_timeout": "500ms"}
        pids = [
            await store.database.run(lambda conn: conn.execute("SELECT pg_backend_pid() AS pid").fetchone()),
            await store.database.read(lambda conn: conn.execute("SELECT pg_backend_pid() AS pid").fetchone()),
        ]
        failures: list[tuple[str, float]] = []

        async def timed(name: str, call: Any) -> None:
            start = time.monotonic()
            with pytest.raises(StoreError) as failed:
                await call()
                pytest.fail(f"{name} succeeded after {time.monotonic() - start:.2f} s")
            failures.append((failed.value.kind, time.monotonic() - start))
            assert "no answer from the database" in str(failed.value)

        # Without the bound the calls below wait for the thaw (a running call cannot be abandoned).
        with frozen([row["pid"] for row in pids], thaw_after=bound + 5):
            async with trio.open_nursery() as nursery:  # one running on each connection, one queued behind
                nursery.start_soon(timed, "put 2", lambda: store.put_issued(record(2)))
                nursery.start_soon(timed, "put 3", lambda: store.put_issued(record(3)))
                nursery.start_soon(timed, "counts", lambda: store.counts(NOW))
                nursery.start_soon(timed, "counts again", lambda: store.counts(NOW))
            assert store.fault is not None and store.fault.kind == "cantopen"
        assert len(failures) == 4
        assert all(kind == "cantopen" and took < bound + POLL + 1.0 for kind, took in failures), failures
        await store.put_issued(record(4))  # on new sessions
        assert store.fault is None
        assert {c.serial for c in await store.list_certificates()} == {1, 4}
        assert (await store.counts(NOW)).certificates["valid"] == 2


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A server of this module's own, for the tests that stop or freeze the whole of it."""
    with postgres_server() as server:
        yield server


async def test_a_frozen_server_holds_no_call_past_its_bound(own_server: PostgresServer) -> None:
    """The whole server frozen, postmaster included, so that connecting again hangs too: calls queued
    behind a hung one still end by their own deadline (a reconnect is not started without the time
    libpq needs for it), and the store works again after SIGCONT."""
    url = own_server.url(own_server.create_database()) + "&options=-c%20statement_timeout%3D500"
    bound = 0.5 + GRACE
    async with PostgresStore.open(url) as store:
        await store.put_issued(record(1))
        took: list[float] = []

        async def put(serial: int, after: float) -> None:
            await trio.sleep(after)
            start = time.monotonic()
            with pytest.raises(StoreError):
                await store.put_issued(record(serial))
            took.append(time.monotonic() - start)

        with frozen(own_server.processes(), thaw_after=3 * bound + 5):
            async with trio.open_nursery() as nursery:
                for i, after in enumerate((0.0, 0.5, 1.5, 2.4, 3.0)):
                    nursery.start_soon(put, 10 + i, after)
        assert len(took) == 5 and max(took) < bound + POLL + 0.5, took
        await store.put_issued(record(2))
        assert store.fault is None


async def test_the_store_rides_out_a_server_restart(own_server: PostgresServer) -> None:
    """While the server is down every call fails as cantopen and readiness says so; once it is back
    the next call connects again, with nothing lost and no restart of scepd."""
    server = own_server  # this test stops it
    url = server.url(server.create_database())
    async with PostgresStore.open(url) as store:
        await store.put_issued(record(1))
        await trio.to_thread.run_sync(server.stop)
        with pytest.raises(StoreError) as failed:
            await store.put_issued(record(2))
        assert failed.value.kind == "cantopen" and store.fault is not None
        with pytest.raises(StoreError):
            await store.ping()
        with pytest.raises(StoreError) as reader_failed:
            await store.counts(NOW)
        assert reader_failed.value.kind == "cantopen"
        await trio.to_thread.run_sync(server.start)
        await store.put_issued(record(2))
        assert store.fault is None
        assert [c.serial for c in await store.list_certificates()] == [2, 1]
        assert (await store.counts(NOW)).certificates["valid"] == 2


async def test_an_unreachable_server_is_cantopen(postgres: Any) -> None:
    url = postgres.url("no_such_database")
    with pytest.raises(StoreError) as failed:
        await PostgresStore.connect(url)
    assert failed.value.kind == "cantopen"


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"event={name} ")]


async def test_a_store_opened_before_its_server_is_up_connects_and_migrates_later(
    own_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A node that boots before its database: the open does not fail, every call (reads included) fails
    as cantopen in one fault episode, and once the server is up the first call migrates and works."""
    caplog.set_level(logging.INFO)
    server = own_server  # this test stops it
    url = server.url(server.create_database())  # empty: the schema is made after the server comes back
    await trio.to_thread.run_sync(server.stop)
    try:
        with pytest.raises(StoreError) as at_once:  # a CLI command: no waiting
            await PostgresStore.connect(url)
        assert at_once.value.kind == "cantopen"
        assert _events(caplog, "store_fault") == []
        async with PostgresStore.open(url, connect_later=True) as store:
            assert store.fault is not None and store.fault.kind == "cantopen"
            for call in (lambda: store.put_issued(record(1)), store.ping, lambda: store.counts(NOW)):
                with pytest.raises(StoreError) as failed:
                    await call()
                assert failed.value.kind == "cantopen"
            assert len(_events(caplog, "store_fault")) == 1
            await trio.to_thread.run_sync(server.start)
            assert (await store.counts(NOW)).certificates["valid"] == 0  # a read first: it migrates too
            await store.put_issued(record(1))
            await store.ping()
            assert store.fault is None
            versions = await store.database.run(
                lambda conn: [r["version"] for r in conn.execute("SELECT version FROM schema_version").fetchall()]
            )
            assert versions == [v for v, _ in MIGRATIONS]
            assert [c.serial for c in await store.list_certificates()] == [1]
            assert len(_events(caplog, "store_fault")) == 1 and len(_events(caplog, "store_fault_cleared")) == 1
            assert len(_events(caplog, "store_migrated")) == 1
    finally:
        if server.pid is None:
            await trio.to_thread.run_sync(server.start)


async def test_a_server_refusing_with_57p03_is_waited_for(own_server: PostgresServer) -> None:
    """A server that runs but answers "not accepting connections" (57P03: starting up, in recovery) is one
    the store waits for, like one that is not there at all."""
    server = own_server  # this test restarts it
    url = server.url(server.create_database())
    await trio.to_thread.run_sync(server.stop)
    try:
        await trio.to_thread.run_sync(server.start_refusing)
        async with PostgresStore.open(url, connect_later=True) as store:
            with pytest.raises(StoreError) as failed:
                await store.put_issued(record(1))
            assert failed.value.kind == "cantopen" and "not accepting connections" in str(failed.value)
            await trio.to_thread.run_sync(server.stop)
            await trio.to_thread.run_sync(server.start)
            await store.put_issued(record(1))
            assert [c.serial for c in await store.list_certificates()] == [1]
    finally:
        if server.pid is None:
            await trio.to_thread.run_sync(server.start)


async def test_what_waiting_cannot_mend_still_fails_the_open(postgres: PostgresServer) -> None:
    """A login the server refuses or a URL libpq cannot read fails at once, server up or not."""
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS scepd_nologin")
        conn.execute("CREATE ROLE scepd_nologin NOLOGIN")
    refused = [
        postgres.url().replace("scepd@", "no_such_role@"),  # 28000
        postgres.url().replace("scepd@", "scepd_nologin@"),  # 28000
        postgres.url("no_such_database"),  # 3D000
        "postgresql://scepd@/db?no_such_option=1",
        "postgresql://[::1/db",
    ]
    for url in refused:
        with trio.fail_after(10), pytest.raises(StoreError):
            await PostgresStore.connect(url, connect_later=True)


@pytest.mark.parametrize(
    ("error", "waits"),
    [
        (psycopg.OperationalError('connection failed: connection to server on socket "/x" failed: No such file'), True),
        (psycopg.OperationalError("failed to resolve host 'db.invalid': [Errno -2] Name or service not known"), True),
        (psycopg.OperationalError("connection failed: ... failed: Connection refused\n\tIs the server running"), True),
        (psycopg.errors.lookup("57P03")("the database system is starting up"), True),
        (psycopg.errors.lookup("08006")("connection failure"), True),
        (psycopg.OperationalError('connection failed: ... FATAL:  database "x" does not exist'), False),
        (psycopg.OperationalError('connection failed: ... FATAL:  password authentication failed for user "a"'), False),
        (psycopg.OperationalError("connection failed: ... FATAL:  no pg_hba.conf entry for host"), False),
        (psycopg.errors.lookup("28P01")("password authentication failed"), False),
        (psycopg.errors.lookup("3D000")("database does not exist"), False),
        (psycopg.ProgrammingError('invalid connection option "x"'), False),
    ],
)
def test_which_open_errors_mean_not_there_yet(error: psycopg.Error, waits: bool) -> None:
    assert unreachable(error) is waits


async def test_serial_collision_is_told_apart_from_other_constraints(postgres_url: str) -> None:
    async with PostgresStore.open(postgres_url) as store:
        await store.put_issued(record(5))
        with pytest.raises(SerialCollision):
            await store.put_issued(dataclasses.replace(record(5), transaction_id="other"))
        assert store.fault is None
        with pytest.raises(StoreError) as failed:
            await store.put_issued(record(6, renewal_of=0xDEAD))  # names no stored certificate
        assert failed.value.kind == "constraint" and not isinstance(failed.value, SerialCollision)


# -- several processes on one database ------------------------------------------------------------


def _node(url: str, node: int, start: multiprocessing.synchronize.Barrier, out: Any) -> None:
    """One scepd node: its own process and store, racing the other node on the same rows."""

    async def main() -> dict[str, Any]:
        start.wait(60)  # both open the fresh database at once: the migration must not break
        async with PostgresStore.open(url) as store:
            result: dict[str, Any] = {"crl": [], "won": [], "held": [], "once": [], "revoked": [], "decided": []}
            for i in range(ROUNDS):
                result["crl"].append(await store.next_crl_number())
                result["won"].append(await store.consume_challenge(f"{i:064x}", NOW))
                request, new = await store.hold_request(held(f"hold-{i}"))
                result["held"].append((request.id, new))
                # Each node signs its own serial for the same request; only one may be kept.
                earlier = await store.put_issued(
                    record(0x10000 * (node + 1) + i, transaction_id=f"once-{i}", csr_sha256="ef" * 32), once=True
                )
                result["once"].append(None if earlier is None else earlier.serial)
                outcome, created = await store.apply_revocation_request(
                    f"ctx-{i}", f"{0x500 + i:x}", 0x500 + i, "", NOW
                )
                result["revoked"].append((outcome.outcome.value, created))
                pending = await store.find_pending(f"hold-{i}")
                assert pending is not None
                decided = await store.decide_pending(pending.id, node == 0, f"node {node}", NOW)
                result["decided"].append(decided is not None)
            return result

    out.put((node, trio.run(main)))


async def test_two_processes_on_one_database_never_both_win(postgres_url: str) -> None:
    # What the nodes race on: challenges to use, certificates Intune asks to revoke.
    async with PostgresStore.open(postgres_url) as store:
        for i in range(ROUNDS):
            await store.add_challenge(f"{i:064x}", NOW + dt.timedelta(hours=1))
            await store.put_issued(record(0x500 + i))

    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    nodes = [ctx.Process(target=_node, args=(postgres_url, n, start, out)) for n in range(2)]
    for p in nodes:
        p.start()
    try:
        results = dict(await trio.to_thread.run_sync(lambda: [out.get(timeout=240) for _ in nodes]))
    finally:
        for p in nodes:
            p.join(30)
            if p.is_alive():
                p.kill()
    a, b = results[0], results[1]

    # CRL numbers: every one handed out once, none skipped.
    assert sorted(a["crl"] + b["crl"]) == list(range(1, 2 * ROUNDS + 1))
    for i in range(ROUNDS):
        assert a["won"][i] != b["won"][i], f"challenge {i}: used by both or by neither"
        assert a["held"][i][0] == b["held"][i][0] and a["held"][i][1] != b["held"][i][1], f"held request {i}"
        # One node stored its certificate (None); the other got that one back instead of storing its own.
        stored, returned = (a["once"][i], b["once"][i]) if a["once"][i] is None else (b["once"][i], a["once"][i])
        assert stored is None and returned in (0x10000 + i, 0x20000 + i), f"request once-{i}"
        assert a["revoked"][i][0] == b["revoked"][i][0] == RevocationOutcome.REVOKED.value
        assert a["revoked"][i][1] != b["revoked"][i][1], f"revocation request ctx-{i} applied twice"
        assert a["decided"][i] != b["decided"][i], f"pending request {i} decided twice"

    async with PostgresStore.open(postgres_url) as store:
        for i in range(ROUNDS):
            kept = await store.find_by_transaction(f"once-{i}", "ef" * 32)
            assert kept is not None
            assert len(await store.list_certificates(search=f"once-{i}")) == 1
        # The sharded counters agree with the rows.
        exact = await store.database.run(
            lambda conn: {
                r["status"]: r["n"]
                for r in conn.execute("SELECT status, count(*) AS n FROM certificates GROUP BY status").fetchall()
            }
        )
        counts = (await store.counts(NOW)).certificates
        assert counts == {"valid": exact.get("valid", 0), "revoked": ROUNDS, "superseded": 0}
        assert counts["valid"] == ROUNDS  # one certificate per once-request
        decided = await store.list_pending(limit=1000)
        assert {r.status for r in decided} <= {PendingStatus.APPROVED, PendingStatus.REJECTED}
        assert len(decided) == ROUNDS
        assert (await store.get(0x500)).status is CertStatus.REVOKED  # type: ignore[union-attr]
