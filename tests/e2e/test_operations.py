"""Operations end to end: metrics after real enrollments, readiness, systemd notify, SIGHUP, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from scepd.scep.constants import FailInfo, PkiStatus
from tests.e2e.conftest import CHALLENGE
from tests.support.daemon import Daemon, init_state, running
from tests.support.scep_client import Client

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(daemon: Daemon) -> Samples:
    text = httpx.get(daemon.metrics_url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def test_metrics_follow_enrollments(daemon: Daemon, client: Client) -> None:
    before = scrape(daemon)
    rep, _ = await client.enroll("metrics-ok", CHALLENGE)
    assert rep.status is PkiStatus.SUCCESS
    bad, _ = await client.enroll("metrics-bad", "not-the-challenge")
    assert bad.fail_info is FailInfo.BAD_REQUEST
    after = scrape(daemon)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    enrolled = {"operation": "PKCS_REQ", "profile": "default", "challenge": "static"}
    assert delta("scepd_enrollments_total", outcome="SUCCESS", **enrolled) == 1
    assert delta("scepd_enrollments_total", outcome="BAD_REQUEST", operation="PKCS_REQ") == 1
    assert delta("scepd_certificates_issued_total", profile="default") == 1
    assert delta("scepd_certificates", status="valid") == 1
    assert delta("scepd_http_requests_total", route="/scep", status="200") >= 2
    # The CA key signed the certificate and nothing else; the RA signed both CertReps and opened both envelopes.
    assert delta("scepd_key_operation_seconds_count", key="scepd-ca", operation="sign", result="ok") == 1
    assert delta("scepd_key_operation_seconds_count", key="scepd-ra", operation="sign", result="ok") == 2
    assert delta("scepd_key_operation_seconds_count", key="scepd-ra", operation="unwrap", result="ok") == 2
    assert total(after, "scepd_key_operation_seconds_count", key="scepd-ca", operation="unwrap") == 0
    assert value(after, "scepd_token_workers") == 1
    assert value(after, "scepd_token_workers_busy") == 0
    assert value(after, "scepd_ready", check="token") == 1
    assert value(after, "scepd_ready", check="store") == 1
    # A ten-year CA and a 24-hour CRL lifetime (scepd init's defaults).
    assert 9 * 365 * 86400 < value(after, "scepd_ca_certificate_expiry_seconds") <= 3650 * 86400
    assert 729 * 86400 < value(after, "scepd_ra_certificate_expiry_seconds") <= 730 * 86400  # and a two-year RA
    assert 0 < value(after, "scepd_crl_next_update_seconds") <= 24 * 3600


async def test_logs_never_carry_the_challenge_or_pin(daemon: Daemon, client: Client) -> None:
    rep, _ = await client.enroll("no-secrets-in-logs", CHALLENGE)
    assert rep.status is PkiStatus.SUCCESS
    await client.enroll("no-secrets-in-logs-2", CHALLENGE + "-wrong")
    await trio.sleep(0.2)
    log = daemon.log()
    assert "audit=issued" in log and "audit=rejected" in log
    pin = (daemon.state / "secrets" / "token.pin").read_text().strip()
    assert len(pin) >= 8 and len(CHALLENGE) >= 8
    assert CHALLENGE not in log
    assert pin not in log


def test_readyz_and_healthz_answer_on_both_listeners(daemon: Daemon) -> None:
    for base in (daemon.base_url, daemon.metrics_base):
        r = httpx.get(f"{base}/readyz", timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ready"
        assert body["checks"]["token"] == {"ok": True, "reason": "ok"}
        assert body["checks"]["store"]["ok"] is True
        assert httpx.get(f"{base}/healthz", timeout=10).json() == {"status": "alive"}


@pytest.fixture
def worker_daemon(tmp_path: Path) -> Iterator[Daemon]:
    init_state(tmp_path, CHALLENGE, workers=1)
    with running(tmp_path, CHALLENGE) as d:
        yield d


def _token_workers(pid: int) -> list[int]:
    # Each thread has its own children list; the workers are started from a Trio worker thread.
    children = [c for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return [int(c) for c in children if b"scepd.keys.pkcs11.worker" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _wait_ready(daemon: Daemon, status: int, timeout: float = 20) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{daemon.metrics_base}/readyz", timeout=15)
        if r.status_code == status or time.monotonic() > deadline:
            assert r.status_code == status, r.text
            return r.json()  # type: ignore[no-any-return]
        time.sleep(0.2)


def test_readiness_flips_when_the_token_is_unreachable(worker_daemon: Daemon) -> None:
    """The token "goes away": its worker dies and the token store is gone (an unplugged HSM)."""
    d = worker_daemon
    _wait_ready(d, 200)
    tokens = d.state / "softhsm" / "tokens"
    away = d.state / "softhsm" / "tokens.away"
    tokens.rename(away)
    try:
        workers = _token_workers(d.proc.pid)
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGKILL)
        body = _wait_ready(d, 503)
        assert body["status"] == "not ready"
        assert body["checks"]["token"]["ok"] is False and body["checks"]["token"]["reason"]
        assert body["checks"]["store"]["ok"] is True
        assert value(scrape(d), "scepd_ready", check="token") == 0
    finally:
        away.rename(tokens)
    body = _wait_ready(d, 200)
    assert body["checks"]["token"] == {"ok": True, "reason": "ok"}
    assert d.alive()
    assert "event=readiness_changed check=token ok=False" in d.log()


def _receive(sock: socket.socket, want: str, timeout: float = 30) -> list[str]:
    """Datagrams until one holding `want`; all of them."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(want in g.split("\n") for g in got):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            raise AssertionError(f"no {want} in {got}") from None
    return got


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_systemd_notify_protocol(tmp_path: Path, abstract: bool) -> None:
    init_state(tmp_path, CHALLENGE)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"scepd-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}  # a ping every 0.2 s
    try:
        with running(tmp_path, CHALLENGE, env=env) as d:
            ready = _receive(sock, "READY=1")
            assert any("STATUS=serving SCEP at" in g for g in ready)
            watchdog = _receive(sock, "WATCHDOG=1", timeout=5)
            watchdog += _receive(sock, "WATCHDOG=1", timeout=5)
            assert not any("STOPPING=1" in g for g in ready + watchdog)
            d.proc.send_signal(signal.SIGTERM)
            _receive(sock, "STOPPING=1")
            assert d.proc.wait(20) == 0
    finally:
        sock.close()
    assert "Traceback" not in d.log(), d.log()


def test_sighup_reloads_profiles_and_keeps_them_on_a_bad_file(tmp_path: Path) -> None:
    init_state(tmp_path, CHALLENGE)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    config = tmp_path / "scepd.toml"
    original = config.read_text()
    try:
        with running(tmp_path, CHALLENGE, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}) as d:
            _receive(sock, "READY=1")
            config.write_text(original.replace("validity_days = 365", "validity_days = 30"))
            d.proc.send_signal(signal.SIGHUP)
            got = _receive(sock, "READY=1")
            assert any(g.startswith("RELOADING=1") for g in got)
            _wait_log(d, "event=config_reloaded")
            assert "profiles_changed=default" in d.log()

            async def validity() -> float:
                async with httpx.AsyncClient(timeout=30) as http:
                    client = Client(d.url, http)
                    await client.get_ca_cert()
                    rep, _ = await client.enroll("after-reload", CHALLENGE)
                    cert = rep.certificates[0]
                    return (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()

            assert abs(trio.run(validity) - 30 * 86400) < 3600

            config.write_text(original.replace("validity_days = 365", "validity_days = 0"))
            d.proc.send_signal(signal.SIGHUP)
            _wait_log(d, "event=reload_rejected")
            assert "key=profiles.default.validity_days" in d.log()
            assert abs(trio.run(validity) - 30 * 86400) < 3600  # the running profile stayed
    finally:
        sock.close()


def _wait_log(d: Daemon, text: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while text not in d.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{d.log()}"
        time.sleep(0.05)


def test_sigterm_during_a_burst_loses_no_issued_certificate(tmp_path: Path) -> None:
    init_state(tmp_path, CHALLENGE, workers=2)
    with running(tmp_path, CHALLENGE) as d:
        received: list[int] = []
        failed: list[str] = []
        terminated_at: list[float] = []
        finished_after: list[float] = []

        async def one(client: Client, n: int) -> None:
            try:
                rep, _ = await client.enroll(f"burst-{n}", CHALLENGE)
            except (httpx.HTTPError, AssertionError) as e:
                failed.append(type(e).__name__)
                return
            if rep.status is PkiStatus.SUCCESS:
                received.append(rep.certificates[0].serial_number)
                if terminated_at:
                    finished_after.append(time.monotonic())

        async def burst() -> None:
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as http:
                client = Client(d.url, http)
                await client.get_ca_cert()
                async with trio.open_nursery() as nursery:
                    for n in range(48):
                        nursery.start_soon(one, client, n)
                    # SIGTERM while requests are in flight: after the first few certificates came back.
                    while len(received) < 4:
                        await trio.sleep(0.005)
                    d.proc.send_signal(signal.SIGTERM)
                    terminated_at.append(time.monotonic())

        trio.run(burst)
        assert d.proc.wait(30) == 0
    assert received, failed
    with d.db() as db:
        stored = {int(row[0], 16) for row in db.execute("SELECT serial FROM certificates")}
    assert set(received) <= stored
    # The daemon finished at least one request that was in flight when it was told to stop.
    assert finished_after, (len(received), failed)
    log = d.log()
    assert "event=shutdown_requested signal=SIGTERM" in log
    assert "Traceback" not in log, log
