"""Smaller exposures (issue 13 point 4): forged log lines, the PIN in reprs, key URIs that name
another token, exception text on the public /readyz."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from scepd.scep.constants import FailInfo, PkiStatus
from tests.e2e.conftest import CHALLENGE
from tests.support.daemon import REPO, Daemon, init_state, running, scepd
from tests.support.scep_client import Client, make_csr, rsa_key

FORGED = "level=ERROR event=forged"


async def test_client_strings_cannot_forge_log_lines(daemon: Daemon, client: Client) -> None:
    """A transactionID and a CSR subject carrying CR/LF stay inside their own log event."""
    key = rsa_key()
    for challenge, n in ((CHALLENGE, 1), ("wrong-" + CHALLENGE, 2)):
        tid = f"tid-{n}\r\n{FORGED} tid={n}\n{FORGED}\x85{FORGED}"
        csr = make_csr(key, f"cn-{n}\n{FORGED} subject={n}\u2028x", challenge)
        rep = await client.send(client.message(csr, key, transaction_id=tid), key)
        if n == 1:
            assert rep.status is PkiStatus.SUCCESS, rep
        else:
            assert rep.fail_info is FailInfo.BAD_REQUEST
    await trio.sleep(0.3)
    log = daemon.log()
    # The events were logged (escaped), so the check below looks at lines that carry the text.
    assert re.search(r"audit=issued .*subject=\"CN=cn-1\\nlevel=ERROR event=forged subject=1\\u2028x\"", log), log[
        -3000:
    ]
    assert re.search(r"event=scep_failure transaction_id=\"tid-2\\r\\nlevel=ERROR", log), log[-3000:]
    assert re.search(r"audit=rejected transaction_id=\"tid-2\\r\\n", log), log[-3000:]
    lines = log.splitlines()
    assert not [line for line in lines if line.lstrip().startswith(FORGED)]
    assert all(line.startswith("ts=") for line in lines if FORGED in line), [x for x in lines if FORGED in x]
    assert "\u2028" not in log and "\x85" not in log


@pytest.fixture(scope="module")
def key_uri_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("scepd-uri")
    init_state(state, CHALLENGE)
    return state


def _with_ca_key(state: Path, uri: str) -> Path:
    config = state / "scepd.toml"
    text = re.sub(r'(?m)^key = "pkcs11:[^"]*"', f'key = "{uri}"', config.read_text())
    assert f'key = "{uri}"' in text
    other = state / f"scepd-{abs(hash(uri))}.toml"
    other.write_text(text)
    return other


def _serve_until_exit(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scepd", "serve", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_key_uri_for_another_token_label_is_refused(key_uri_state: Path) -> None:
    config = _with_ca_key(key_uri_state, "pkcs11:token=not-scepd;object=scepd-ca;type=private")
    checked = scepd("config", "check", "--config", str(config), check=False)
    assert checked.returncode != 0
    assert "ca.key" in checked.stderr and "token='not-scepd'" in checked.stderr, checked.stderr
    served = _serve_until_exit(config)
    assert served.returncode != 0 and "serving SCEP" not in served.stdout
    assert "token='not-scepd'" in served.stderr, served.stderr


def test_key_uri_for_another_token_model_is_refused_at_start(key_uri_state: Path) -> None:
    """manufacturer/serial/model are known only once the token is open: config check cannot, serve does."""
    config = _with_ca_key(key_uri_state, "pkcs11:token=scepd;model=Luna%20K7;object=scepd-ca;type=private")
    assert scepd("config", "check", "--config", str(config), check=False).returncode == 0
    served = _serve_until_exit(config)
    assert served.returncode != 0 and "serving SCEP" not in served.stdout
    assert "ca.key" in served.stderr and "model='Luna K7' but the token's is 'SoftHSM v2'" in served.stderr, (
        served.stderr
    )


def test_key_uri_matching_the_token_is_served(key_uri_state: Path) -> None:
    uri = "pkcs11:token=scepd;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;object=scepd-ca;type=private"
    config = _with_ca_key(key_uri_state, uri)
    (key_uri_state / "scepd.toml").write_text(config.read_text())
    with running(key_uri_state, CHALLENGE) as d:
        assert httpx.get(d.url, params={"operation": "GetCACert"}, timeout=10).status_code == 200


async def test_hypercorn_speaks_through_the_logfmt_handler_only(daemon: Daemon) -> None:
    """hypercorn's own messages ("Running on ...") come once, as logfmt events, not a second time in
    hypercorn's bracketed format beside them."""
    lines = daemon.log().splitlines()
    assert [x for x in lines if x.startswith("ts=") and "logger=hypercorn.error" in x and "Running on" in x]
    assert not [x for x in lines if re.match(r"\[\d{4}-\d\d-\d\d ", x)], lines[:20]
