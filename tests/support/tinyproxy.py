"""A real forward proxy for tests: Debian's tinyproxy, started with its own configuration on a
free loopback port (never the system service), and stopped by its PID."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

VIA_NAME = "scepd-test-proxy"


@dataclass(frozen=True)
class Proxy:
    url: str  # http://127.0.0.1:PORT, no credentials
    user: str
    password: str
    log: Path

    def requests(self) -> list[str]:
        """The request lines tinyproxy logged ("Request (file descriptor N): GET http://... HTTP/1.1")."""
        return [
            line for line in self.log.read_text(errors="replace").splitlines() if "Request (file descriptor" in line
        ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def tinyproxy(directory: Path, *, user: str = "scepd", password: str = "proxy-s3cret") -> Iterator[Proxy]:
    binary = shutil.which("tinyproxy")
    if binary is None:
        pytest.fail("tinyproxy is not installed (scripts/install.sh installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "tinyproxy.log"
    for _ in range(5):  # the free port may be taken between choosing and binding it
        port = _free_port()
        conf = directory / "tinyproxy.conf"
        conf.write_text(
            f"Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 200\n"
            f'LogFile "{log}"\nLogLevel Info\nPidFile "{directory / "tinyproxy.pid"}"\n'
            f'Allow 127.0.0.1\nBasicAuth {user} {password}\nViaProxyName "{VIA_NAME}"\n'
        )
        log.write_text("")
        proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        if proc.poll() is None:
            break
    else:
        pytest.fail(f"tinyproxy did not start: {log.read_text()[-500:]}")
    try:
        yield Proxy(f"http://127.0.0.1:{port}", user, password, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
