"""micromdm's reference SCEP server (`scepserver`, Debian package `scep` 2.1.0).

`running_scepserver()` initialises a fresh depot (CA key + self-signed CA
certificate) and serves it on a free loopback port.  Notes:

* scepserver has no listen-address flag: it binds ":PORT" (all interfaces).
  We only ever talk to it over 127.0.0.1.
* Its GetCACert is CA-only DER (application/x-x509-ca-cert); it has no RA.
* Its CertRep envelope is encrypted with single DES-CBC whatever the request
  used (Go pkcs7 default), and signed with SHA-1 by the CA key itself.
* It refuses a second certificate for a subject DN already in its depot
  ("DN ... already exists", failInfo badRequest) unless within -allowrenew
  days of expiry: use a fresh CN per enrollment.
* A wrong challenge is answered with CertRep FAILURE failInfo badRequest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.external.target import ScepTarget

SCEPSERVER = shutil.which("scepserver") or "/usr/bin/scepserver"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_scep(url: str, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> str:
    """Poll GetCACaps until HTTP 200; return the caps text."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"SCEP server exited with {proc.returncode}")
        try:
            r = httpx.get(url, params={"operation": "GetCACaps"}, timeout=2)
            if r.status_code == 200:
                return r.text
            last = r.status_code
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer GetCACaps in {timeout}s (last: {last!r})")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def start_scepserver(workdir: Path, depot: Path, args: list[str]) -> tuple[str, subprocess.Popen[bytes]]:
    """scepserver on `depot` at a free loopback port, in its own process group, logging to
    workdir/scepserver.log; its URL once it answers. A port taken between the choice and the bind
    (scepserver binds the wildcard) is retried on another, five times."""
    log_path = workdir / "scepserver.log"
    for attempt in range(5):
        port = free_port()
        url = f"http://127.0.0.1:{port}/scep"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [SCEPSERVER, "-depot", str(depot), "-port", str(port), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=True,
            )
        try:
            wait_for_scep(url, proc=proc)
        except (RuntimeError, TimeoutError) as e:
            _stop(proc)
            if attempt == 4:
                raise RuntimeError("scepserver did not start:\n" + log_path.read_text(errors="replace")[-3000:]) from e
            continue
        return url, proc
    raise AssertionError("unreachable")


@contextlib.contextmanager
def running_scepserver(
    workdir: Path, challenge: str, *, key_size: int = 2048, extra_args: tuple[str, ...] = ()
) -> Iterator[ScepTarget]:
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    depot = workdir / "depot"
    subprocess.run(
        [
            SCEPSERVER,
            "ca",
            "-init",
            "-depot",
            str(depot),
            "-keySize",
            str(key_size),
            "-organization",
            "scep reference",
            "-country",
            "US",
        ],
        check=True,
        capture_output=True,
        timeout=60,
        cwd=workdir,
    )
    ca_pem = depot / "ca.pem"
    assert ca_pem.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    url, proc = start_scepserver(workdir, depot, ["-challenge", challenge, "-debug", *extra_args])
    try:
        yield ScepTarget(url=url, ca_pem_path=ca_pem, challenge=challenge, legacy_des_replies=True)
    finally:
        _stop(proc)
