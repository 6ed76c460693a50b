"""A throwaway SoftHSM2 token for tests, made by softhsm/init-token.sh.

SoftHSM2 reads SOFTHSM2_CONF once, when the module is first initialised in a
process, so a test session uses ONE token; tests keep apart by key label.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE = "/usr/lib/softhsm/libsofthsm2.so"


@dataclass(frozen=True)
class SoftHsmToken:
    state_dir: Path
    conf: Path
    module: str
    label: str
    pin_file: Path
    pin: str = field(repr=False)


def make_token(state_dir: Path) -> SoftHsmToken:
    """Initialise (or reuse) the token labelled 'scepd' under `state_dir`."""
    out = subprocess.run(
        ["bash", str(REPO / "softhsm" / "init-token.sh"), str(state_dir)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    conf = Path(out.strip().splitlines()[-1])
    pin_file = state_dir / "secrets" / "token.pin"
    return SoftHsmToken(
        state_dir=state_dir,
        conf=conf,
        module=MODULE,
        label="scepd",
        pin_file=pin_file,
        pin=pin_file.read_text().rstrip("\n"),
    )
