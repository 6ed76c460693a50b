"""Smaller exposures (issue 13 point 4): forged log lines, the PIN in reprs, key URIs that name
another token, exception text on the public /readyz."""

from __future__ import annotations

import re

import trio

from scepd.scep.constants import FailInfo, PkiStatus
from tests.daemon import Daemon
from tests.e2e.conftest import CHALLENGE
from tests.scep_client import Client, make_csr, rsa_key

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
    assert re.search(r"audit=issued .*subject=\"CN=cn-1\\nlevel=ERROR event=forged subject=1\\u2028x\"", log), log[-3000:]
    assert re.search(r"scep_failure transaction_id=\"tid-2\\r\\nlevel=ERROR", log), log[-3000:]
    assert re.search(r"audit=rejected transaction_id=\"tid-2\\r\\n", log), log[-3000:]
    lines = log.splitlines()
    assert not [line for line in lines if line.lstrip().startswith(FORGED)]
    assert all(line.startswith("ts=") for line in lines if FORGED in line), [l for l in lines if FORGED in l]
    assert "\u2028" not in log and "\x85" not in log
