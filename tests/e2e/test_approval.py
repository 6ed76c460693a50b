"""Manual approval end to end: PENDING, `scepd pending approve|reject`, CertPoll, expiry."""

from __future__ import annotations

import datetime as dt
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scepd.scep.client import make_self_signed
from scepd.scep.constants import FailInfo, PkiStatus
from tests.e2e.conftest import CHALLENGE, lifecycle_client
from tests.support.daemon import Daemon, scepd
from tests.support.external import certmonger
from tests.support.scep_client import Client, make_csr, rsa_key


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as h:
        yield h


class Requester:
    """One device: its key, CSR, self-signed signer and transactionID, kept across request and polls."""

    def __init__(self, client: Client, cn: str) -> None:
        self.client = client
        self.cn = cn
        self.key = rsa_key()
        self.csr = make_csr(self.key, cn, CHALLENGE)
        self.signer = make_self_signed(self.key, self.csr.subject, dt.datetime.now(dt.UTC))
        self.transaction_id = secrets.token_hex(16)

    async def request(self):  # type: ignore[no-untyped-def]
        body = self.client.message(self.csr, self.key, signer=self.signer, transaction_id=self.transaction_id)
        return await self.client.send(body, self.key)

    async def poll(self, **kw: object):  # type: ignore[no-untyped-def]
        return await self.client.poll(self.csr, self.key, self.signer, self.transaction_id, **kw)  # type: ignore[arg-type]


def pending(daemon: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return scepd("pending", *args, "--config", str(daemon.state / "scepd.toml"), check=check)


def request_id(daemon: Daemon, cn: str, *extra: str) -> int:
    """The id `scepd pending list` shows for the request of `cn`."""
    rows = [line.split() for line in pending(daemon, "list", *extra).stdout.splitlines() if f"CN={cn}" in line]
    assert len(rows) == 1, rows
    return int(rows[0][0])


def stored(daemon: Daemon, cn: str) -> list[tuple[str, str]]:
    with daemon.db() as db:
        return db.execute("SELECT serial, status FROM certificates WHERE subject = ?", (f"CN={cn}",)).fetchall()


async def test_held_request_is_issued_on_the_poll_after_approval(
    daemon_lifecycle: Daemon, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    client = await lifecycle_client(daemon_lifecycle, "/held", http)
    device = Requester(client, "held-approved")
    first = await device.request()
    assert first.status is PkiStatus.PENDING, first
    assert first.transaction_id == device.transaction_id
    assert stored(daemon_lifecycle, device.cn) == []

    rid = request_id(daemon_lifecycle, device.cn)
    shown = pending(daemon_lifecycle, "show", str(rid)).stdout
    assert "status:         pending" in shown and "profile:        held" in shown, shown
    assert (await device.poll()).status is PkiStatus.PENDING

    approved = pending(daemon_lifecycle, "approve", str(rid), "--reason", "ticket 4711")
    assert "approved" in approved.stdout
    assert "audit=approved" in approved.stderr and "ticket 4711" in approved.stderr

    rep = await device.poll()
    assert rep.status is PkiStatus.SUCCESS, rep
    cert = rep.certificates[0]
    assert cert.public_key() == device.key.public_key()
    assert cert.subject == device.csr.subject
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(client.ca_certs[-1].public_bytes(serialization.Encoding.PEM))
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca_pem), str(leaf)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert stored(daemon_lifecycle, device.cn) == [(f"{cert.serial_number:x}", "valid")]

    # Polling again (a lost reply) and resending the PKCSReq both get the same certificate.
    again = await device.poll(use_get=True)
    assert again.status is PkiStatus.SUCCESS and again.certificates[0].serial_number == cert.serial_number
    resent = await device.request()
    assert resent.status is PkiStatus.SUCCESS and resent.certificates[0].serial_number == cert.serial_number
    assert len(stored(daemon_lifecycle, device.cn)) == 1
    issued = pending(daemon_lifecycle, "show", str(rid)).stdout
    assert "status:         issued" in issued and f"serial:         {cert.serial_number:x}" in issued, issued
    assert f"audit=issued transaction_id={device.transaction_id}" in daemon_lifecycle.log()


async def test_rejected_request_fails_at_the_next_poll(daemon_lifecycle: Daemon, http: httpx.AsyncClient) -> None:
    client = await lifecycle_client(daemon_lifecycle, "/held", http)
    device = Requester(client, "held-rejected")
    assert (await device.request()).status is PkiStatus.PENDING
    rid = request_id(daemon_lifecycle, device.cn)
    pending(daemon_lifecycle, "reject", str(rid), "--reason", "unknown device")

    rep = await device.poll()
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST
    assert rep.fail_info_text is not None and "unknown device" in rep.fail_info_text
    assert stored(daemon_lifecycle, device.cn) == []
    # A decision is final: the rejected request cannot be approved afterwards.
    late = pending(daemon_lifecycle, "approve", str(rid), check=False)
    assert late.returncode == 1 and "it is rejected" in late.stdout
    assert request_id(daemon_lifecycle, device.cn, "--status", "rejected") == rid


async def test_undecided_request_expires(daemon_lifecycle: Daemon, http: httpx.AsyncClient) -> None:
    client = await lifecycle_client(daemon_lifecycle, "/brief", http)  # pending_ttl_hours = 0.0004: 1.44 s
    device = Requester(client, "held-expired")
    held_at = trio.current_time()
    assert (await device.request()).status is PkiStatus.PENDING
    # The daemon's clock is real: poll until the request has lapsed, and not before its time.
    with trio.fail_after(30):
        while (rep := await device.poll()).status is PkiStatus.PENDING:
            await trio.sleep(0.2)
    assert trio.current_time() - held_at >= 1.44
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST
    assert rep.fail_info_text is not None and "expired" in rep.fail_info_text
    rid = request_id(daemon_lifecycle, device.cn, "--status", "expired")
    late = pending(daemon_lifecycle, "approve", str(rid), check=False)
    assert late.returncode == 1 and "it is expired" in late.stdout
    assert stored(daemon_lifecycle, device.cn) == []


async def test_polls_that_are_not_the_requesters_are_refused(daemon_lifecycle: Daemon, http: httpx.AsyncClient) -> None:
    client = await lifecycle_client(daemon_lifecycle, "/held", http)
    device = Requester(client, "held-impostor")
    assert (await device.request()).status is PkiStatus.PENDING
    pending(daemon_lifecycle, "approve", str(request_id(daemon_lifecycle, device.cn)))

    # Another key polling for the same transaction does not get the certificate.
    impostor = Requester(client, "held-impostor")
    impostor.key = rsa_key(fresh=True)
    impostor.signer = make_self_signed(impostor.key, device.csr.subject, dt.datetime.now(dt.UTC))
    impostor.transaction_id = device.transaction_id
    rep = await impostor.poll()
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_MESSAGE_CHECK
    # A transaction nobody held, and a subject that is not the held request's.
    stranger = Requester(client, "held-nobody")
    assert (await stranger.poll()).fail_info is FailInfo.BAD_CERT_ID
    other_subject = Requester(client, "held-someone-else")
    other_subject.key, other_subject.signer = device.key, device.signer
    other_subject.transaction_id = device.transaction_id
    assert (await other_subject.poll()).fail_info is FailInfo.BAD_CERT_ID
    assert stored(daemon_lifecycle, device.cn) == []
    # The real requester still gets it.
    assert (await device.poll()).status is PkiStatus.SUCCESS


async def test_poll_on_an_endpoint_without_approval_is_bad_cert_id(
    daemon_lifecycle: Daemon, http: httpx.AsyncClient
) -> None:
    client = await lifecycle_client(daemon_lifecycle, "/strict", http)
    device = Requester(client, "not-held")
    rep = await device.poll()
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_CERT_ID


def test_pending_metric_counts_waiting_requests(daemon_lifecycle: Daemon) -> None:
    async def hold() -> None:
        async with httpx.AsyncClient(timeout=30) as h:
            client = await lifecycle_client(daemon_lifecycle, "/held", h)
            assert (await Requester(client, "held-for-metric").request()).status is PkiStatus.PENDING

    def gauge() -> float:
        text = httpx.get(daemon_lifecycle.metrics_url, timeout=10).text
        return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("scepd_requests_pending "))

    before = gauge()
    trio.run(hold)
    assert gauge() == before + 1
    pending(daemon_lifecycle, "reject", str(request_id(daemon_lifecycle, "held-for-metric")))
    assert gauge() == before


@pytest.mark.parametrize("collect", ["refresh", "resubmit"])
def test_certmonger_waits_while_held_and_collects_after_approval(
    daemon_lifecycle: Daemon, tmp_path: Path, collect: str
) -> None:
    """certmonger (a client we did not write) gets PENDING, keeps the request, and after the
    operator's approval collects the certificate.

    `getcert refresh` runs certmonger's own poll now instead of on its timer (scep-submit with
    CERTMONGER_OPERATION=POLL); certmonger 0.79.17 polls by sending its PKCSReq again under the
    same transaction, not a CertPoll. `getcert resubmit` is the admin's way: a rebuilt PKCSReq,
    same transaction and key."""
    cn = f"cm-held-{collect}"
    with certmonger.CertmongerInstance(tmp_path / "cm") as cm:
        cm.add_scep_ca("held", daemon_lifecycle.base_url + "/held", signing_ca=daemon_lifecycle.state / "ca.pem")
        # No final state comes while the request is held: wait for certmonger to have heard "pending".
        submitted = cm.request("held", subject=f"CN={cn}", challenge=CHALLENGE, timeout=0)
        deadline = time.monotonic() + 30
        while 'SCEP status is "pending"' not in cm.log_text():
            assert time.monotonic() < deadline, cm.log_tail()
            time.sleep(0.2)
        first = cm.wait(
            submitted.request_id,
            key_path=submitted.key_path,
            cert_path=cm.files_dir / f"{submitted.request_id}.cert.pem",
            timeout=0,
        )
        assert first.status == "CA_WORKING" and first.cert_path is None, first.listing
        assert stored(daemon_lifecycle, cn) == []
        pending(daemon_lifecycle, "approve", str(request_id(daemon_lifecycle, cn)))
        cm.getcert(collect, "-i", first.request_id)
        done = cm.wait(
            first.request_id,
            key_path=first.key_path,
            cert_path=cm.files_dir / f"{first.request_id}.cert.pem",
            timeout=30,
        )
        assert done.status == "MONITORING" and done.cert_path is not None, done.listing + cm.log_tail()
        verify = subprocess.run(
            ["openssl", "verify", "-CAfile", str(daemon_lifecycle.state / "ca.pem"), str(done.cert_path)],
            capture_output=True,
            text=True,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
    serial = x509.load_pem_x509_certificate(done.cert_path.read_bytes()).serial_number
    assert stored(daemon_lifecycle, cn) == [(f"{serial:x}", "valid")]
