"""The daemon on PostgreSQL, end to end, and what it does when the database fails under it.

A real `scepd serve` (real SoftHSM2 token, loopback HTTP, a systemd notify socket with a watchdog)
whose `[store] url` names a database on a private PostgreSQL server this module starts: the tests stop
it, start it again and freeze it, so it is not the session's shared server. Promised, and checked here:

- an ordinary enrollment, a revocation by the `scepd cert revoke` CLI, and the served CRL listing it;
- the server stopped while clients enroll (a trigger slows certificate inserts so that the stop always
  catches one half stored): every answer is a certificate or a 503 with Retry-After (no 500, no reset
  connection), /readyz says the store is not ready, the daemon stays up and keeps feeding systemd's
  watchdog, one fault episode in its log and no traceback; started again, readiness and enrollments
  come back by themselves, every certificate a client received is in the database exactly once, and
  the one caught in the insert reached nobody;
- the server frozen (SIGSTOP, the way a hung host or a stuck disk looks from outside: the socket stays
  open and nothing answers): requests still end with a 503 within the store's time bound, /readyz goes
  not ready, and everything recovers after SIGCONT.

The URL sets a short statement_timeout (libpq `options`), from which the store derives its bound on a
call (scepd/store/postgres/connection.py: 1 s + 2 s here), so the frozen-server test costs seconds, not
the default's twelve.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
import trio
from cryptography import x509

from scepd.health import PUBLIC_FAILURE
from scepd.scep.client import parse_cert_rep
from scepd.scep.constants import PkiStatus
from tests.e2e.test_crl import fetch_crl
from tests.support.daemon import Daemon, init_state, running, scepd
from tests.support.postgres import PostgresServer, frozen, postgres_server
from tests.support.scep_client import Client, make_csr, rsa_key

CHALLENGE = "pg-faults-challenge-3Wn"
STATEMENT_TIMEOUT = 1.0  # seconds, through the URL: the store's own bound on a call follows it
CALL_BOUND = 6.0  # what a test accepts as "bounded": the store's 3 s, its watchdog's poll, and slack on 2 cores
RECOVERY = 15.0  # seconds within which readiness must come back by itself once the server is back


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as s:
        yield s


class Notifications:
    """The systemd notify socket the daemon is given: every datagram, with when it came."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.got: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:  # closed
                return
            self.got.append((time.monotonic(), data.decode()))

    def watchdog_pings(self, start: float, end: float) -> int:
        return sum(1 for at, text in self.got if start <= at <= end and "WATCHDOG=1" in text.split("\n"))

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


@dataclass
class Node:
    daemon: Daemon
    notify: Notifications


@pytest.fixture(scope="module")
def node(server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The daemon on its database, under a systemd watchdog (WATCHDOG=1 due every 0.4 s)."""
    name = server.create_database()
    ms = int(STATEMENT_TIMEOUT * 1000)
    url = server.url(name) + f"&options=-c%20statement_timeout%3D{ms}"
    state = tmp_path_factory.mktemp("scepd-pg-faults")
    init_state(state, CHALLENGE, store_url=url)
    config = state / "scepd.toml"
    # The CRL follows the store every 0.2 s, so a revocation shows in the served CRL at once.
    config.write_text(config.read_text().replace('file = "ca.crl"', 'file = "ca.crl"\ncheck_interval_seconds = 0.2'))
    notify = Notifications(state / "notify.sock")
    try:
        with running(state, CHALLENGE, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}) as d:
            yield Node(d, notify)
    finally:
        notify.close()


def _serials_in(d: Daemon) -> list[str]:
    assert d.store_url is not None
    with psycopg.connect(d.store_url) as conn:
        return [row[0] for row in conn.execute("SELECT serial FROM certificates")]


def _readyz(base: str, timeout: float) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = httpx.get(f"{base}/readyz", timeout=timeout)
    return r.status_code, r.json()


async def _await_ready(d: Daemon, status: int, within: float) -> tuple[float, dict]:  # type: ignore[type-arg]
    """Poll the metrics listener's /readyz until it answers `status`; how long that took, and its body."""
    start = time.monotonic()
    while True:
        code, body = await trio.to_thread.run_sync(_readyz, d.metrics_base or "", CALL_BOUND + 5)
        waited = time.monotonic() - start
        if code == status:
            return waited, body
        assert waited < within, (code, body)
        await trio.sleep(0.2)


@dataclass
class Answers:
    """What the clients saw: every answer's kind, the serials handed out, and anything that was not allowed."""

    serials: list[int] = field(default_factory=list)
    unavailable: int = 0
    wrong: list[str] = field(default_factory=list)
    slowest: float = 0.0

    def successes(self) -> int:
        return len(self.serials)


async def _enroll_once(client: Client, cn: str, answers: Answers) -> None:
    key = rsa_key()
    body = client.message(make_csr(key, cn, CHALLENGE), key, transaction_id=os.urandom(8).hex())
    start = time.monotonic()
    try:
        r = await client.post(body)
    except httpx.HTTPError as e:  # a reset, a refused connection, a timeout: never acceptable
        answers.wrong.append(f"{cn}: {type(e).__name__}: {e}")
        return
    finally:
        answers.slowest = max(answers.slowest, time.monotonic() - start)
    if r.status_code == 200:
        rep = parse_cert_rep(r.content, decrypt_key=key, trusted_signers=client.ca_certs)
        if rep.status is PkiStatus.SUCCESS:
            answers.serials.append(rep.certificates[0].serial_number)
        else:
            answers.wrong.append(f"{cn}: SCEP {rep.status} {rep.fail_info}")
    elif r.status_code == 503 and r.headers.get("retry-after", "").isdigit() and int(r.headers["retry-after"]) > 0:
        answers.unavailable += 1
    else:
        answers.wrong.append(f"{cn}: HTTP {r.status_code} {r.headers.get('retry-after')!r} {r.text[:100]}")


async def _until(answers: Answers, done: Callable[[], bool], within: float) -> None:
    """Wait for `done()`; fail at once on any answer that is not allowed, or when `within` seconds pass."""
    with trio.fail_after(within):
        while not done():
            assert answers.wrong == [], answers.wrong
            await trio.sleep(0.05)


async def _load(d: Daemon, answers: Answers, stop: trio.Event, clients: int = 3) -> None:
    """`clients` clients enrolling back to back (each its own HTTP connection) until `stop` is set."""

    async def one(i: int) -> None:
        async with httpx.AsyncClient(timeout=CALL_BOUND + 20) as http:
            client = Client(d.url, http)
            await client.get_ca_cert()
            n = 0
            while not stop.is_set():
                await _enroll_once(client, f"load-{i}-{n}-{os.urandom(3).hex()}", answers)
                n += 1

    async with trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(one, i)


def _log_since(d: Daemon, mark: int) -> str:
    return "".join(d.output[mark:])


def _check_log(text: str) -> None:
    assert "Traceback" not in text, text
    assert " 500 " not in text, text
    # The store's own errors reach the log and the readiness reasons, never the driver's exceptions.
    assert "psycopg" not in text and "OperationalError" not in text, text
    started = [x for x in text.splitlines() if "event=store_fault " in x]
    cleared = [x for x in text.splitlines() if "event=store_fault_cleared " in x]
    assert len(started) == 1 and len(cleared) == 1, (started, cleared)  # one episode, not one line per request


async def test_enroll_revoke_and_crl_on_postgres(node: Node) -> None:
    d = node.daemon
    async with httpx.AsyncClient(timeout=30) as http:
        client = Client(d.url, http)
        await client.get_ca_cert()
        certs: list[x509.Certificate] = []
        for cn in ("pg-revoked", "pg-valid"):
            rep, _ = await client.enroll(cn, CHALLENGE)
            assert rep.status is PkiStatus.SUCCESS, rep.fail_info_text
            certs.append(rep.certificates[0])
    revoked, valid = certs
    assert {f"{c.serial_number:x}" for c in certs} <= set(_serials_in(d))

    serial = f"{revoked.serial_number:x}"
    out = scepd("cert", "revoke", serial, "--reason", "keyCompromise", "-c", str(d.config))
    assert f"revoked {serial}" in out.stdout
    with trio.fail_after(10):  # the daemon's CRL follows the store every 0.2 s
        while (entry := fetch_crl(d).get_revoked_certificate_by_serial_number(revoked.serial_number)) is None:
            await trio.sleep(0.1)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise
    assert fetch_crl(d).get_revoked_certificate_by_serial_number(valid.serial_number) is None
    assert d.store_url is not None
    with psycopg.connect(d.store_url) as conn:
        row = conn.execute("SELECT status, revocation_reason FROM certificates WHERE serial = %s", (serial,)).fetchone()
    assert row == ("revoked", "keyCompromise"), row
    assert "Traceback" not in d.log()


SLOW_INSERTS = """
CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$;
CREATE TRIGGER slow_insert BEFORE INSERT ON certificates FOR EACH ROW EXECUTE FUNCTION slow_insert();
"""


def _sql(d: Daemon, sql: str) -> list[tuple[object, ...]]:
    assert d.store_url is not None
    with psycopg.connect(d.store_url, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


async def test_server_stopped_under_load(node: Node, server: PostgresServer) -> None:
    d = node.daemon
    mark = len(d.output)
    before = set(_serials_in(d))
    answers, stop = Answers(), trio.Event()
    # Inserts of certificates take 0.3 s in the server, so the stop finds one half done: a certificate
    # signed and on its way into the store, which must then never reach its client.
    _sql(d, SLOW_INSERTS)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_load, d, answers, stop)
        await _until(answers, lambda: answers.successes() >= 2, 30)
        with trio.fail_after(10):
            while not _sql(d, "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep'"):
                await trio.sleep(0.02)
        try:
            await trio.to_thread.run_sync(server.stop)
            stopped_at = time.monotonic()
            outage_start = answers.successes()
            _, body = await _await_ready(d, 503, within=5)
            assert body["checks"]["store"]["ok"] is False and body["checks"]["token"]["ok"] is True, body
            code, public = await trio.to_thread.run_sync(_readyz, d.base_url, CALL_BOUND + 5)
            assert code == 503 and public["checks"]["store"] == {"ok": False, "reason": PUBLIC_FAILURE}, public
            # Through the outage: the clients keep coming and are told to come back later.
            await _until(answers, lambda: answers.unavailable >= 6, 30)
            assert d.alive()
            # At most the requests already past the store when it stopped may still have succeeded.
            assert answers.successes() - outage_start <= 3
            await trio.sleep_until(trio.current_time() + max(0.0, stopped_at + 1.2 - time.monotonic()))
            # systemd's watchdog is still fed: a restart would not bring the database back.
            assert node.notify.watchdog_pings(stopped_at + 0.4, time.monotonic()) >= 1, node.notify.got[-5:]
        finally:
            await trio.to_thread.run_sync(server.start)
        _sql(d, "DROP TRIGGER slow_insert ON certificates")
        await _await_ready(d, 200, within=RECOVERY)
        recovered = answers.successes()
        await _until(answers, lambda: answers.successes() >= recovered + 3, 30)
        stop.set()

    assert answers.wrong == [], answers.wrong
    assert d.alive()
    # Every certificate a client received is in the database, once.
    stored = _serials_in(d)
    assert len(stored) == len(set(stored))
    received = {f"{s:x}" for s in answers.serials}
    assert len(received) == len(answers.serials)
    added = set(stored) - before
    assert received <= added, received - added
    # Anything else added was never sent, and the daemon said so: a COMMIT whose answer the stop cut
    # off may have happened (the client was told 503; a retry of that request would find it).
    log = _log_since(d, mark)
    dropped = set(re.findall(r"audit=not_delivered transaction_id=\S+ serial=([0-9a-f]+)", log))
    assert added - received <= dropped, (added - received, dropped)
    # The certificate caught in the slow insert was signed and dropped, and says so; no client has it.
    assert dropped and not dropped & received, dropped
    assert dropped - set(stored), (dropped, stored)  # the insert the stop interrupted left nothing
    _check_log(log)


async def test_frozen_server_is_bounded_and_recovers(node: Node, server: PostgresServer) -> None:
    d = node.daemon
    mark = len(d.output)
    answers = Answers()
    async with httpx.AsyncClient(timeout=CALL_BOUND + 20) as http:
        client = Client(d.url, http)
        await client.get_ca_cert()
        await _enroll_once(client, "before-freeze", answers)
        assert answers.successes() == 1, answers
        # The postmaster and all its children: connecting again hangs as well. Without a bound the
        # requests would wait for the thaw, which comes after CALL_BOUND + 2 s and so fails them on time.
        with frozen(server.processes(), thaw_after=CALL_BOUND + 2):
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(_enroll_once, client, f"frozen-{i}", answers)
                _, body = await _await_ready(d, 503, within=CALL_BOUND)
                assert body["checks"]["store"]["ok"] is False, body
            assert answers.successes() == 1 and answers.unavailable == 3, answers
            assert answers.slowest < CALL_BOUND, answers.slowest
            assert d.alive()
            # systemd's watchdog is still fed, now that the store is known to fail (before, the store's
            # readiness may still pass on the strength of the last commit).
            known = time.monotonic()
            await trio.sleep(0.8)
            assert node.notify.watchdog_pings(known, time.monotonic()) >= 1, node.notify.got[-5:]
        await _await_ready(d, 200, within=RECOVERY)
        await _enroll_once(client, "after-thaw", answers)
    assert answers.wrong == [] and answers.successes() == 2, answers
    stored = set(_serials_in(d))
    assert {f"{s:x}" for s in answers.serials} <= stored
    _check_log(_log_since(d, mark))
