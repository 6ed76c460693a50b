"""Run a real scepd process for tests: its own SoftHSM2 token, CA, store and port.

The daemon is set up with the same `scepd init` the README uses and started
with `scepd serve` on an ephemeral loopback port, so tests talk real HTTP to
the real thing. Teardown sends SIGTERM, as systemd would.

Its store is the SQLite file `scepd init` configures, or, with `init_state(..., store_url=...)`, a
PostgreSQL database (the `postgres_url` fixture of tests/conftest.py gives a fresh one).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_SERVING = re.compile(r"serving SCEP at (http://[^\s]+?)(/\S*) ")
_METRICS = re.compile(r"serving metrics at (http://[^\s]+?)/metrics")


@dataclass
class Daemon:
    state: Path
    base_url: str  # http://127.0.0.1:PORT
    path: str
    challenge: str
    proc: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    metrics_base: str | None = None  # http://127.0.0.1:PORT of the metrics listener, when enabled
    store_url: str | None = None  # the PostgreSQL database, when the config names one instead of a file

    @property
    def metrics_url(self) -> str:
        assert self.metrics_base is not None, "the daemon printed no metrics URL"
        return self.metrics_base + "/metrics"

    @property
    def url(self) -> str:
        return self.base_url + self.path

    @property
    def config(self) -> Path:
        return self.state / "scepd.toml"

    @property
    def ca_pem(self) -> Path:
        return self.state / "ca.pem"

    @property
    def ra_pem(self) -> Path:
        return self.state / "ra.pem"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def db(self) -> sqlite3.Connection:
        """A read-only view of the daemon's SQLite store, to check what was recorded."""
        assert self.store_url is None, "this daemon's store is PostgreSQL: query store_url with psycopg"
        return sqlite3.connect(f"file:{self.state / 'scepd.sqlite3'}?mode=ro", uri=True)

    def log(self) -> str:
        return "".join(self.output)


def scepd(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scepd", *args],
        cwd=cwd or REPO,
        check=check,
        capture_output=True,
        text=True,
        timeout=120,
    )


_TEMPLATES: dict[bool, Path] = {}
_TEMPLATE_LOCK = threading.Lock()


def _template(no_ra: bool) -> Path:
    """One state directory per layout made by the real `scepd init`, once per test process.

    Generating the RSA-3072 CA and RA keys on SoftHSM2 is most of the cost of `scepd init` (seconds each);
    tests that only need *a* set-up daemon start from a copy of this one instead of generating keys again."""
    with _TEMPLATE_LOCK:
        if no_ra not in _TEMPLATES:
            root = Path(tempfile.mkdtemp(prefix="scepd-template-"))
            atexit.register(shutil.rmtree, root, True)
            state = root / ("lone-ca" if no_ra else "ca-ra")
            scepd(
                "init",
                "--state",
                str(state),
                "--listen",
                "127.0.0.1:0",
                "--challenge",
                "template-challenge",
                "--workers",
                "0",
                "--processes",
                "1",
                "--subject",
                f"CN=scepd test CA {state.name},O=scepd tests",
                *(["--no-ra"] if no_ra else []),
            )
            _TEMPLATES[no_ra] = state
        return _TEMPLATES[no_ra]


def init_state(
    state: Path,
    challenge: str,
    *,
    workers: int = 0,
    processes: int = 1,
    extra_toml: str = "",
    no_ra: bool = False,
    store_url: str | None = None,
) -> None:
    """What `scepd init` as the README runs it (CA + RA) leaves in `state`; `no_ra` makes the lone-CA layout of
    earlier versions. With `store_url` the `[store]` section names that PostgreSQL database instead of the
    SQLite file (what an operator edits by hand: docs/storage.md).

    The directory is a copy of a template made once by the real `scepd init` (see `_template`), with its own
    token files, challenge and settings: a test may change its token, store and config freely, but every copy
    carries the same CA (one per layout). Tests of `scepd init` itself call `scepd("init", ...)`."""
    template = _template(no_ra)
    shutil.copytree(template, state, dirs_exist_ok=True)
    conf = state / "softhsm" / "softhsm2.conf"
    conf.write_text(conf.read_text().replace(str(template), str(state.resolve())))
    (state / "secrets" / "challenge").write_text(challenge + "\n")
    config = state / "scepd.toml"
    text = config.read_text()
    for before, after in (
        ("workers = 0\n", f"workers = {workers}\n"),
        ("processes = 1\n", f"processes = {processes}\n"),
        *([('path = "scepd.sqlite3"\n', f'url = "{store_url}"\n')] if store_url is not None else []),
    ):
        assert text.count(before) == 1, (before, text)
        text = text.replace(before, after)
    config.write_text(text + ("\n" + extra_toml if extra_toml else ""))


@contextmanager
def running(
    state: Path, challenge: str, path: str = "/scep", timeout: float = 60, env: dict[str, str] | None = None
) -> Iterator[Daemon]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "scepd", "serve", "--config", str(state / "scepd.toml")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    found = threading.Event()
    base: list[str] = []
    metrics_base: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if (mm := _METRICS.search(line)) and not metrics_base:
                metrics_base.append(mm.group(1))
            m = _SERVING.search(line)
            if m and not found.is_set():
                base.append(m.group(1))
                found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not found.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("scepd did not start:\n" + "".join(output))
    store_url = tomllib.loads((state / "scepd.toml").read_text()).get("store", {}).get("url")
    daemon = Daemon(state, base[0], path, challenge, proc, output, metrics_base[0] if metrics_base else None, store_url)
    try:
        yield daemon
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        reader.join(5)
