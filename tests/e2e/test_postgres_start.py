"""A daemon on PostgreSQL that starts while its database is down: the boot order after a site power
cut, when the application nodes come up before the database.

A real `scepd serve` (real SoftHSM2 token, loopback HTTP, a systemd notify socket with a watchdog) on an
empty database of a private PostgreSQL server this module starts and stops. Promised, and checked here:
the daemon starts instead of exiting, says READY=1 and keeps feeding the watchdog, answers GetCACaps and
GetCACert, answers an enrollment with 503 and Retry-After and /readyz with 503 naming the store; once
the server is started, readiness comes back by itself, the schema is made, an enrollment succeeds and
its certificate is in the database; one fault episode in the log, no traceback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import trio

from scepd.health import PUBLIC_FAILURE
from tests.e2e.test_postgres_faults import (
    CHALLENGE,  # the one _enroll_once sends
    RECOVERY,
    Answers,
    Notifications,
    _await_ready,
    _enroll_once,
    _readyz,
)
from tests.support.daemon import init_state, running
from tests.support.postgres import PostgresServer, postgres_server
from tests.support.scep_client import Client

LEASE = 1.5  # seconds


def _cleared(log: str) -> str:
    return "\n".join(x for x in log.splitlines() if "event=background_fault_cleared " in x)


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row is not None else 0


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    with postgres_server() as s:
        yield s


async def test_a_daemon_started_before_its_database_serves_503_then_recovers(
    server: PostgresServer, tmp_path: Path
) -> None:
    url = server.url(server.create_database())
    init_state(tmp_path, CHALLENGE, store_url=url)
    config = tmp_path / "scepd.toml"  # a short lease: the leader and node-keys loops retry every LEASE / 3 s
    config.write_text(config.read_text().replace("[server]\n", f"[server]\nleader_lease_seconds = {LEASE}\n", 1))
    notify = Notifications(tmp_path / "notify.sock")
    await trio.to_thread.run_sync(server.stop)
    try:
        env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
        with running(tmp_path, CHALLENGE, env=env, timeout=20) as d:
            answers = Answers()
            async with httpx.AsyncClient(timeout=20) as http:
                client = Client(d.url, http)
                # What needs no store is served as usual.
                assert "POSTPKIOperation" in await client.caps()
                assert await client.get_ca_cert()
                # What needs it is a 503 with Retry-After (anything else lands in answers.wrong).
                await _enroll_once(client, "before-the-database", answers)
                assert answers.wrong == [] and answers.unavailable == 1, answers
                _, body = await _await_ready(d, 503, within=5)
                assert body["checks"]["store"]["ok"] is False and body["checks"]["token"]["ok"] is True, body
                code, public = await trio.to_thread.run_sync(_readyz, d.base_url, 10)
                assert code == 503 and public["checks"]["store"] == {"ok": False, "reason": PUBLIC_FAILURE}, public
                assert httpx.get(f"{d.base_url}/healthz", timeout=10).status_code == 200
                assert httpx.get(d.metrics_url, timeout=10).status_code == 200  # stale store gauges, no error
                # systemd was told the daemon is up, and its watchdog is fed through the outage.
                since = time.monotonic()
                await trio.sleep(0.9)
                assert any("READY=1" in text.split("\n") for _, text in notify.got), notify.got
                assert notify.watchdog_pings(since, time.monotonic()) >= 1, notify.got[-5:]
                assert d.alive()

                await trio.to_thread.run_sync(server.start)
                await _await_ready(d, 200, within=RECOVERY)
                await _enroll_once(client, "after-the-database", answers)
            assert answers.wrong == [] and answers.successes() == 1, answers
            with psycopg.connect(url) as conn:
                stored = [row[0] for row in conn.execute("SELECT serial FROM certificates")]
            assert stored == [f"{answers.serials[0]:x}"]
            # The background loops found the database too: the lease taken, a CRL signed and kept, the
            # node's keys announced.
            with trio.fail_after(RECOVERY):
                while not ("event=leader_acquired " in d.log() and "loop=node_keys" in _cleared(d.log())):
                    await trio.sleep(0.1)
                while _count(url, "crl_current") == 0:
                    await trio.sleep(0.1)
            assert _count(url, "node_keys") == 1
            assert d.alive()
            log = d.log()
    finally:
        notify.close()
        if server.pid is None:
            await trio.to_thread.run_sync(server.start)
    assert "Traceback" not in log and " 500 " not in log, log
    assert "psycopg" not in log and "OperationalError" not in log, log
    lines = log.splitlines()
    started = [x for x in lines if "event=store_fault " in x]
    cleared = [x for x in lines if "event=store_fault_cleared " in x]
    assert len(started) == 1 and len(cleared) == 1, (started, cleared)
    assert len([x for x in lines if "event=store_migrated " in x]) == 1, log
