"""`server.processes = 2`: two real scepd processes on one port, one store, one token.

Each enrollment here uses its own connection, so the kernel spreads them
over both processes; a serving process's CPU time shows it did its share.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509

from scepd.scep.constants import PkiStatus
from tests.e2e.conftest import CHALLENGE
from tests.e2e.test_intune import INTUNE_PATH, intune_toml
from tests.e2e.test_operations import scrape, total, value
from tests.support.daemon import Daemon, init_state, running, scepd
from tests.support.fake_intune.server import running_fake_intune
from tests.support.scep_client import Client, make_csr, rsa_key


def _serving_children(pid: int) -> list[int]:
    """The serving processes the primary started (not its token workers)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if b"--serving-fd" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
            except FileNotFoundError:
                pass
    return sorted(set(found))


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _wait(predicate, timeout: float = 30, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    state = tmp_path_factory.mktemp("scepd-processes")
    init_state(state, CHALLENGE, processes=2)
    config = state / "scepd.toml"
    text = config.read_text()
    assert 'file = "ca.crl"\n' in text  # scepd init's [crl]; revocations are looked for twice a second
    config.write_text(text.replace('file = "ca.crl"\n', 'file = "ca.crl"\ncheck_interval_seconds = 0.5\n'))
    with running(state, CHALLENGE) as d:
        _wait(lambda: len(_serving_children(d.proc.pid)) == 1, what="the serving process")
        yield d
    assert "Traceback" not in d.log(), d.log()


@asynccontextmanager
async def _fresh_client(url: str) -> AsyncIterator[Client]:
    """A client whose every request opens a new connection, which the kernel gives to either process."""
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        c = Client(url, http)
        await c.get_ca_cert()
        yield c


async def _enroll_apart(d: Daemon, names: list[str]) -> list[x509.Certificate]:
    """Each enrollment on a fresh connection, all at once."""
    certs: list[x509.Certificate] = []

    async def one(name: str) -> None:
        async with _fresh_client(d.url) as c:
            rep, _ = await c.enroll(name, CHALLENGE)
            assert rep.status is PkiStatus.SUCCESS, (rep.fail_info, rep.fail_info_text)
            certs.append(rep.certificates[0])

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(one, name)
    return certs


async def test_both_processes_enroll_and_metrics_sum_them(two: Daemon) -> None:
    [child] = _serving_children(two.proc.pid)
    before, ticks = scrape(two), _cpu_ticks(child)
    certs = await _enroll_apart(two, [f"proc-{i}" for i in range(24)])
    ca = x509.load_pem_x509_certificate(two.ca_pem.read_bytes())
    for cert in certs:
        cert.verify_directly_issued_by(ca)
    # The serving process did real work: 24 RSA-2048 enrollments cost well over 10 ms of CPU each time.
    assert _cpu_ticks(child) - ticks >= 2, "the serving process took no share of the enrollments"
    after = scrape(two)
    assert (
        total(after, "scepd_enrollments_total", outcome="SUCCESS")
        - total(before, "scepd_enrollments_total", outcome="SUCCESS")
        == 24
    )
    signs = total(after, "scepd_key_operation_seconds_count", operation="sign", result="ok") - total(
        before, "scepd_key_operation_seconds_count", operation="sign", result="ok"
    )
    assert signs == 48
    assert value(after, "scepd_token_workers") == 2  # one token thread in each process
    with two.db() as db:
        (count,) = db.execute("SELECT count(*) FROM certificates WHERE subject LIKE 'CN=proc-%'").fetchone()
    assert count == 24


async def test_a_resent_request_gets_one_certificate_across_processes(two: Daemon) -> None:
    key = rsa_key()
    async with httpx.AsyncClient(timeout=30) as http:
        c = Client(two.url, http)
        await c.get_ca_cert()
        body = c.message(
            make_csr(key, "resent-everywhere", CHALLENGE), key, transaction_id="resent-" + os.urandom(8).hex()
        )
    serials: list[int] = []

    async def send() -> None:
        async with _fresh_client(two.url) as c:
            rep = await c.send(body, key)
            assert rep.status is PkiStatus.SUCCESS
            serials.append(rep.certificates[0].serial_number)

    async with trio.open_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(send)
    assert len(set(serials)) == 1, serials
    with two.db() as db:
        (count,) = db.execute("SELECT count(*) FROM certificates WHERE subject = 'CN=resent-everywhere'").fetchone()
    assert count == 1


def _crls(d: Daemon, n: int = 12) -> list[x509.CertificateRevocationList]:
    """The CRL as served `n` times, each over a new connection, so both processes answer."""
    crls = []
    for _ in range(n):
        with httpx.Client(timeout=10) as http:
            crls.append(x509.load_der_x509_crl(http.get(f"{d.base_url}/crl/ca.crl").content))
    return crls


def _crl_numbers(d: Daemon) -> set[int]:
    return {crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number for crl in _crls(d)}


async def test_serving_processes_serve_the_primarys_crl_and_follow_revocations(two: Daemon) -> None:
    [first] = _crl_numbers(two)
    [cert] = await _enroll_apart(two, ["to-revoke"])
    scepd("cert", "revoke", "--config", str(two.config), format(cert.serial_number, "x"), "--reason", "keyCompromise")

    def revoked_everywhere() -> bool:
        return all(crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None for crl in _crls(two))

    _wait(revoked_everywhere, timeout=30, what="every process to serve the new CRL")
    [now] = _crl_numbers(two)
    assert now > first


def test_sighup_reloads_every_process(two: Daemon) -> None:
    config = two.config
    text = config.read_text()
    assert "validity_days = 365" in text
    config.write_text(text.replace("validity_days = 365", "validity_days = 30"))
    try:
        os.kill(two.proc.pid, signal.SIGHUP)
        _wait(lambda: two.log().count("event=config_reloaded") >= 2, what="both processes to reload")
        certs = trio.run(_enroll_apart, two, [f"reloaded-{i}" for i in range(16)])
        for cert in certs:
            days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
            assert days <= 31, f"{cert.subject.rfc4514_string()} got {days} days: a process missed the reload"
    finally:
        config.write_text(text)
        os.kill(two.proc.pid, signal.SIGHUP)
        _wait(lambda: two.log().count("event=config_reloaded") >= 4, what="the reload back")


def test_a_dead_serving_process_is_replaced(two: Daemon) -> None:
    [child] = _serving_children(two.proc.pid)
    os.kill(child, signal.SIGKILL)
    [replacement] = _wait(
        lambda: [p for p in _serving_children(two.proc.pid) if p != child] or None, what="a new serving process"
    )
    assert replacement != child
    assert "event=serving_process_exited n=1" in two.log()
    certs = trio.run(_enroll_apart, two, [f"after-restart-{i}" for i in range(8)])
    assert len(certs) == 8 and two.alive()


def test_sigterm_stops_every_process_and_a_lost_primary_stops_them_too(tmp_path: Path) -> None:
    init_state(tmp_path, CHALLENGE, processes=3)
    with running(tmp_path, CHALLENGE) as d:
        children = _wait(lambda: (c := _serving_children(d.proc.pid)) and len(c) == 2 and c, what="2 children")
        environ = dict(v.split(b"=", 1) for v in Path(f"/proc/{d.proc.pid}/environ").read_bytes().split(b"\0") if v)
        metrics_dir = Path(environ[b"PROMETHEUS_MULTIPROC_DIR"].decode())  # set by the re-exec
        assert list(metrics_dir.glob("*.db"))
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0
        assert not metrics_dir.exists()  # a temporary directory of the primary's own: removed at exit
        for pid in children:
            _wait(lambda pid=pid: not Path(f"/proc/{pid}").exists(), what=f"serving process {pid} to exit")
    with running(tmp_path, CHALLENGE) as d:
        children = _wait(lambda: (c := _serving_children(d.proc.pid)) and len(c) == 2 and c, what="2 children")
        d.proc.kill()  # no chance to pass anything on: the socketpair's EOF must do it
        d.proc.wait(10)
        for pid in children:
            _wait(
                lambda pid=pid: (
                    not Path(f"/proc/{pid}").exists()
                    or Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
                ),
                what=f"orphaned serving process {pid} to exit",
            )
        assert "event=primary_gone" in d.log()


async def test_intune_enrollments_through_both_processes(tmp_path: Path) -> None:
    """Each serving process validates with Intune and notifies it itself, over its own Entra token."""
    with running_fake_intune() as fake:
        secret = tmp_path / "intune-client-secret"
        secret.write_text(fake.client_secret or "")
        init_state(tmp_path, CHALLENGE, processes=2, extra_toml=intune_toml(fake, secret, interval=3600))
        with running(tmp_path, CHALLENGE, path=INTUNE_PATH) as d:
            [child] = _wait(lambda: _serving_children(d.proc.pid) or None, what="the serving process")
            ticks = _cpu_ticks(child)
            tids = [f"tid-procs-{i}-{os.urandom(4).hex()}" for i in range(16)]

            async def one(tid: str) -> None:
                async with _fresh_client(d.url) as c:
                    key = rsa_key()
                    cn = f"device-{tid}"
                    body = c.message(
                        make_csr(key, cn, fake.mint_challenge(f"CN={cn}", ttl=600)), key, transaction_id=tid
                    )
                    rep = await c.send(body, key)
                    assert rep.status is PkiStatus.SUCCESS, rep.fail_info_text
                    [success] = fake.notifications("success")[tid]
                    assert int(success.body["certificateSerialNumber"], 16) == rep.certificates[0].serial_number

            async with trio.open_nursery() as nursery:
                for tid in tids:
                    nursery.start_soon(one, tid)
            assert _cpu_ticks(child) - ticks >= 2, "the serving process took no share of the enrollments"
            validated = {c.body["request"]["transactionId"] for c in fake.calls("validate") if c.status == 200}
            assert set(tids) <= validated
        assert "Traceback" not in d.log(), d.log()
