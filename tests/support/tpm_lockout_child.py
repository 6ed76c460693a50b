"""Run by tests/keys/test_tpm_lockout.py in a process of its own: a TPM put into lockout.

A lockout lasts 1000 s on swtpm, so it gets its own software TPM, and tpm2-pkcs11
reads its store and TCTI once per process, so it gets its own process too.

    python -m tests.support.tpm_lockout_child DIR   -> one JSON object on stdout
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from tests.support.tpm import MODULE, TCTI, SoftwareTpm

WRONG_LOGINS = """
import pkcs11, sys
token = pkcs11.lib(sys.argv[1]).get_token(token_label="lockout")
for i in range(4):
    try:
        token.open(rw=True, user_pin=f"wrong-pin-{i}").close()
    except pkcs11.exceptions.PKCS11Error as e:
        print(type(e).__name__)
"""


def main(directory: Path) -> dict[str, object]:
    from scepd.keys.pkcs11.config import TokenConfig
    from scepd.keys.pkcs11.session import TokenSession, start_failure
    from scepd.keys.tpm import create_token

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logging.getLogger("scepd.token").addHandler(Collect())
    tpm = SoftwareTpm.start(directory)
    try:
        os.environ.update(tpm.env)
        create_token("lockout", "so-pin-lockout", "user-pin-lockout", store=str(tpm.store), tcti=TCTI)
        cfg = TokenConfig(
            MODULE, "lockout", "user-pin-lockout", tpm2_pkcs11_store=str(tpm.store), tpm2_tcti=TCTI, timeout=5
        )
        session = TokenSession(cfg)
        session.generate("k", "ec", 0, "P-256")
        before = session.dispatch("sign", ("k", "ECDSA", b"a" * 32))[0]
        # Another process guesses PINs until the TPM locks out (swtpm: after 3).
        wrong = subprocess.run(
            [sys.executable, "-c", WRONG_LOGINS, MODULE], capture_output=True, text=True, timeout=60
        ).stdout.split()
        tpm.restart_tpm()  # the running session must log in again, into the lockout
        answers = [session.dispatch("sign", ("k", "ECDSA", b"a" * 32)) for _ in range(4)]
        try:
            TokenSession(cfg)
            start = ("opened", "")
        except Exception as e:  # noqa: BLE001 - reported
            start = start_failure(e)
        return {"before": before, "wrong": wrong, "answers": answers, "start": start, "logs": records}
    finally:
        tpm.stop()


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
