"""The key layout on a real token (issue 13, docs/keys.md): a CA key that only signs, an RA that opens
envelopes, its rejection secret; an earlier version's lone-CA state directory, its warnings and the one
command that adds an RA; RA renewal and its expiry gauge."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from tests.e2e.conftest import CHALLENGE
from tests.support.daemon import REPO, Daemon, init_state, running, scepd
from tests.support.scep_client import Client

CA_LABEL, RA_LABEL = "scepd-ca", "scepd-ra"


def probe(config: Path, *args: str) -> Any:
    """tests/support/token_probe.py in its own process: the daemon's token, not the test session's."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.token_probe", str(config), *args],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return json.loads(out) if out.strip() else None


async def enroll_ok(daemon: Daemon, cn: str, *, chain: int) -> Client:
    async with httpx.AsyncClient(timeout=30) as http:
        client = Client(daemon.url, http)
        assert len(await client.get_ca_cert()) == chain
        rep, _ = await client.enroll(cn, CHALLENGE)
        assert rep.status.name == "SUCCESS", (rep.fail_info, rep.fail_info_text)
        rep.certificates[0].verify_directly_issued_by(client.ca_certs[-1])
        return client


def warnings(text: str) -> set[str]:
    return set(
        re.findall(r"event=(ca_key_opens_envelopes|ca_key_can_decrypt|envelope_key_without_reject_secret)", text)
    )


def test_default_keys_on_the_token(daemon: Daemon) -> None:
    """The CA key refuses C_Decrypt; both keys are sensitive and never extractable; the RA has its secret."""
    keys = probe(daemon.config, "keys", CA_LABEL, RA_LABEL)
    ca, ra = keys[CA_LABEL], keys[RA_LABEL]
    assert ca["c_decrypt"] == "CKR_KEY_FUNCTION_NOT_PERMITTED", ca
    assert (ca["DECRYPT"], ca["UNWRAP"], ca["SIGN"]) == (False, False, True)
    # The positive control: the same probe opens a block with the RA key.
    assert ra["c_decrypt"] == "ok" and ra["DECRYPT"] and ra["SIGN"], ra
    for attrs in (ca, ra):
        assert attrs["SENSITIVE"] and attrs["ALWAYS_SENSITIVE"], attrs
        assert not attrs["EXTRACTABLE"] and attrs["NEVER_EXTRACTABLE"], attrs
    assert ra["reject_secret"] and not ca["reject_secret"]
    assert "event=ca_key" not in daemon.log() and "event=envelope_key" not in daemon.log()


async def test_legacy_state_keeps_working_warns_and_ra_init_adds_the_ra(tmp_path: Path) -> None:
    state = tmp_path / "old"
    init_state(state, CHALLENGE, no_ra=True)
    config = state / "scepd.toml"
    probe(config, "drop-secret", CA_LABEL)  # as made before the rejection secret existed

    check = scepd("config", "check", "--config", str(config))
    assert warnings(check.stdout) == {"ca_key_opens_envelopes", "envelope_key_without_reject_secret"}, check.stdout
    assert check.stdout.count("scepd: warning:") == 2
    with running(state, CHALLENGE) as d:
        await enroll_ok(d, "legacy-device", chain=1)
        assert warnings(d.log()) == {"ca_key_opens_envelopes", "envelope_key_without_reject_secret"}, d.log()

    # A file already where the RA certificate would go is not taken over, and the config stays as it was.
    before = config.read_text()
    (state / "ra.pem").write_bytes((state / "ca.pem").read_bytes())
    refused = scepd("ca", "ra-init", "--config", str(config), check=False)
    assert refused.returncode != 0 and "--certificate" in refused.stderr, refused.stderr
    assert config.read_text() == before
    (state / "ra.pem").unlink()

    out = scepd("ca", "ra-init", "--config", str(config), "--subject", "CN=old RA,O=scepd tests").stdout
    ca_table = tomllib.loads(config.read_text())["ca"]
    assert ca_table["ra_key"] == "pkcs11:token=scepd;object=scepd-ra;type=private", out
    assert ca_table["ra_certificate"] == "ra.pem"
    with running(state, CHALLENGE) as d:
        client = await enroll_ok(d, "legacy-device-after-ra", chain=2)
        assert client.recipient.subject.rfc4514_string() == "CN=old RA,O=scepd tests"
        # The RA got its rejection secret; the old CA key still has CKA_DECRYPT, and that is still said.
        assert warnings(d.log()) == {"ca_key_can_decrypt"}, d.log()
    # Once every daemon serves the RA: running it again adds nothing, and makes the CA key sign-only.
    before = config.read_text()
    out = scepd("ca", "ra-init", "--config", str(config), "--restrict-ca-key").stdout
    assert "already there" in out and "can no longer decrypt" in out, out
    assert config.read_text() == before
    check = scepd("config", "check", "--config", str(config))
    assert "warning" not in check.stdout, check.stdout


def gauge(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not exposed"
    return float(m.group(1))


async def test_ra_renew_same_key_new_certificate_and_gauge(tmp_path: Path) -> None:
    state = tmp_path / "renew"
    init_state(state, CHALLENGE)
    config, ra_pem = state / "scepd.toml", state / "ra.pem"
    old = x509.load_pem_x509_certificate(ra_pem.read_bytes())

    out = scepd("ca", "ra-renew", "--config", str(config), "--if-expiring-within", "30").stdout
    assert "not renewed" in out and x509.load_pem_x509_certificate(ra_pem.read_bytes()) == old

    scepd("ca", "ra-renew", "--config", str(config), "--days", "10")
    new = x509.load_pem_x509_certificate(ra_pem.read_bytes())
    assert new.serial_number != old.serial_number
    assert new.public_key() == old.public_key() and new.subject == old.subject
    now = dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=9) < new.not_valid_after_utc - now <= dt.timedelta(days=10)

    with running(state, CHALLENGE) as d:
        client = await enroll_ok(d, "after-renewal", chain=2)
        assert client.recipient == new
        text = httpx.get(d.metrics_url, timeout=10).text
        assert 9 * 86400 < gauge(text, "scepd_ra_certificate_expiry_seconds") <= 10 * 86400
        assert gauge(text, "scepd_ca_certificate_expiry_seconds") > 9 * 365 * 86400
        assert "event=ra_certificate_expiring days_left=9" in d.log(), d.log()


def test_legacy_ra_gauge_is_nan(daemon_legacy: Daemon) -> None:
    """No RA, no RA expiry: NaN, so an alert on it cannot fire."""
    text = httpx.get(daemon_legacy.metrics_url, timeout=10).text
    assert gauge(text, "scepd_ra_certificate_expiry_seconds") != gauge(text, "scepd_ra_certificate_expiry_seconds")


def test_ra_init_does_not_adopt_a_key_it_did_not_make(daemon_legacy: Daemon, tmp_path: Path) -> None:
    """On a lone-CA state, another key already labelled like the default RA is not given an RA certificate."""
    config = daemon_legacy.config
    scepd("intune", "credential", "--config", str(config), "--label", RA_LABEL, "--out", str(tmp_path / "x.pem"))
    before = config.read_text()
    refused = scepd("ca", "ra-init", "--config", str(config), check=False)
    assert refused.returncode != 0 and "--label" in refused.stderr, refused.stderr
    assert config.read_text() == before and not daemon_legacy.ra_pem.exists()
