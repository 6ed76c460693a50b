"""The CRL publisher of a real daemon through a token outage (issue 14 point 2): the token store goes
away and its worker dies; the daemon keeps serving, the failed regenerations are logged once and
counted, and the loop signs the pending revocation as soon as the token is back."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import trio
from cryptography import x509

from tests.e2e.test_operations import _token_workers, scrape, value
from tests.support.daemon import init_state, running, scepd
from tests.support.scep_client import Client

CHALLENGE = "crl-faults-challenge"


def _wait(predicate, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_crl_loop_survives_a_token_outage_and_resumes(tmp_path: Path) -> None:
    init_state(tmp_path, CHALLENGE, workers=1)
    config = tmp_path / "scepd.toml"
    config.write_text(config.read_text().replace('file = "ca.crl"', 'file = "ca.crl"\ncheck_interval_seconds = 0.2'))
    with running(tmp_path, CHALLENGE) as d:

        async def enroll() -> int:
            async with httpx.AsyncClient(timeout=30) as http:
                client = Client(d.url, http)
                await client.get_ca_cert()
                rep, _ = await client.enroll("crl-fault-device", CHALLENGE)
                return rep.certificates[0].serial_number

        serial = trio.run(enroll)
        crl_url = d.base_url + "/crl/ca.crl"
        tokens, away = tmp_path / "softhsm" / "tokens", tmp_path / "softhsm" / "tokens.away"
        tokens.rename(away)
        try:
            for pid in _token_workers(d.proc.pid):
                os.kill(pid, signal.SIGKILL)
            scepd("cert", "revoke", f"{serial:x}", "--reason", "keyCompromise", "-c", str(config))
            _wait(lambda: value(scrape(d), "scepd_crl_refresh_failures_total", cause="token") >= 3)
            # Still serving what needs no token, and still serving the previous CRL.
            assert httpx.get(d.url, params={"operation": "GetCACaps"}, timeout=10).status_code == 200
            old = x509.load_der_x509_crl(httpx.get(crl_url, timeout=10).content)
            assert old.get_revoked_certificate_by_serial_number(serial) is None
        finally:
            away.rename(tokens)

        def listed() -> bool:
            crl = x509.load_der_x509_crl(httpx.get(crl_url, timeout=10).content)
            return crl.get_revoked_certificate_by_serial_number(serial) is not None

        _wait(listed, 60)
        # The recovery is logged once the regeneration has finished (the new CRL is served a little before).
        _wait(lambda: "event=crl_refresh_recovered" in d.log(), 10)
        assert d.alive()
        log = d.log()
        # One warning for the whole outage, however many attempts failed, and the recovery.
        assert log.count("event=crl_refresh_failed cause=token") == 1, log
        assert "Traceback" not in log
