"""The README's TPM one-command, `./scripts/run.sh --token tpm`, run as written.

It starts a software TPM and its resource manager on a private bus, makes the
TPM-backed default in ./var-tpm and serves; the test reads the URL and the
challenge from what it prints, enrolls once with the project's client, then
stops the script with SIGTERM and checks that scepd, swtpm, the bus and
tpm2-abrmd are all gone (by their PIDs).

The checkout is a temporary directory whose `scripts` and `pyproject.toml` are
this repository's, and whose `.venv` is what `scripts/install.sh` leaves behind
(its stamp says pip already ran): the script's install step then checks the
Debian packages and installs nothing, and no shared virtual environment is
touched. Skipped only where swtpm is not installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from scepd.scep.constants import PkiStatus
from tests.support.scep_client import connected
from tests.support.tpm import requires_swtpm

pytestmark = requires_swtpm
REPO = Path(__file__).resolve().parents[2]
_SERVING = re.compile(r"serving SCEP at (http://\S+)")
_CHALLENGE = re.compile(r"static challenge password: (\S+)")


def readme_tpm_command() -> list[str]:
    """The first shell block of the README's TPM section, which must be a single command."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Keys in a TPM 2.0") :]
    block = section[section.index("```sh\n") + 6 :]
    lines = block[: block.index("```")].strip().splitlines()
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def _checkout(root: Path) -> None:
    (root / "scripts").symlink_to(REPO / "scripts")
    (root / "pyproject.toml").symlink_to(REPO / "pyproject.toml")
    venv = root / ".venv" / "bin"
    venv.mkdir(parents=True)
    wrappers = {
        "python": f'exec {shlex.quote(sys.executable)} "$@"\n',
        "scepd": f'exec {shlex.quote(sys.executable)} -m scepd "$@"\n',
    }
    for name, body in wrappers.items():
        (venv / name).write_text("#!/bin/sh\n" + body)
        (venv / name).chmod(0o755)
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    (root / ".venv" / ".scepd-installed").write_text(digest + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; /proc says so.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


async def test_the_readme_tpm_command_serves_enrolls_and_stops_everything(tmp_path: Path) -> None:
    command = readme_tpm_command()
    assert command == ["./scripts/run.sh", "--token", "tpm"]
    _checkout(tmp_path)
    # Loopback ports the kernel picks: other tests and helpers share the machine (README: arguments go to init).
    command += ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    url: list[str] = []
    challenge: list[str] = []
    both = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if (m := _SERVING.search(line)) and not url:
                url.append(m.group(1))
            if (m := _CHALLENGE.search(line)) and not challenge:
                challenge.append(m.group(1))
            if url and challenge:
                both.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    swtpm_dir = tmp_path / "var-tpm" / "swtpm"
    pids: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 120
        while not both.wait(0.2):
            assert proc.poll() is None, "".join(output)
            assert time.monotonic() < deadline, "".join(output)
        for name in ("swtpm", "dbus", "abrmd"):
            pids[name] = int((swtpm_dir / f"{name}.pid").read_text())
            assert _alive(pids[name]), name
        text = (tmp_path / "var-tpm" / "scepd.toml").read_text()
        assert "libtpm2_pkcs11.so" in text and 'tpm2_tcti = "tabrmd:bus_type=session"' in text

        async with connected(url[0]) as client:
            ra, ca = client.ca_certs
            assert ca == x509.load_pem_x509_certificate((tmp_path / "var-tpm" / "ca.pem").read_bytes())
            rep, key = await client.enroll("readme-tpm-device", challenge[0])
            assert rep.status == PkiStatus.SUCCESS, (rep.fail_info, rep.fail_info_text, "".join(output))
            cert = rep.certificates[0]
            assert cert.public_key() == key.public_key()
            cert.verify_directly_issued_by(ca)
            caps = await client.http.get(url[0], params={"operation": "GetCACaps"})
            assert caps.status_code == 200 and b"POSTPKIOperation" in caps.content
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        # Whatever the script left behind is stopped here by PID, then reported below.
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {name: pid for name, pid in pids.items() if _alive(pid)}
        for pid in left.values():
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 143, "".join(output)
    assert not left, f"still running after run.sh stopped: {left}"
    assert not list(swtpm_dir.glob("*.pid")), list(swtpm_dir.glob("*.pid"))
    assert "Traceback" not in "".join(output), "".join(output)
    # scepd itself stopped (it was the script's child): nothing answers on its port any more.
    with pytest.raises(httpx.TransportError):
        httpx.get(url[0], params={"operation": "GetCACaps"}, timeout=2)
