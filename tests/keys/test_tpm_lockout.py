"""A TPM in dictionary-attack lockout: reported once with how to clear it, not hammered (tests/support/tpm_lockout_child.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.tpm import requires_swtpm

pytestmark = requires_swtpm
REPO = Path(__file__).resolve().parent.parent.parent


def test_a_locked_out_tpm_is_reported_once_and_not_asked_again(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.tpm_lockout_child", str(tmp_path / "tpm")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] == "ok"
    assert result["wrong"][:3] == ["PinIncorrect"] * 3 and result["wrong"][3] == "PinLocked", result["wrong"]
    answers = result["answers"]
    assert answers[0][0] == "backend"  # the call that met the reset TPM
    # The next ones: the re-login meets the lockout, which is said, not retried on every call.
    assert all(a[0] == "backend" and "dictionary-attack lockout" in a[1] for a in answers[1:]), answers
    assert sum("event=token_pin_locked" in line for line in result["logs"]) == 1, result["logs"]
    kind, message = result["start"]
    assert kind == "pin_locked" and "tpm2_dictionarylockout --clear-lockout" in message, result["start"]
