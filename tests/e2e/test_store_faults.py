"""Store faults over HTTP (issue 14 point 1): a full disk, a file that refuses writes (I/O error) and
a database locked past its timeout give 503 with Retry-After, never a 500; nothing is signed or
delivered that is not recorded; one log event per episode; /readyz follows within seconds, on both
listeners (the public one without the reason); scepd_store_errors_total counts by kind.

The store lives on a small ext4 file system the test loop-mounts (so root only, as in CI): filling it is a real
ENOSPC, `chattr +i` on the database and its WAL a real EPERM on write. Both are undone by the test,
and the daemon must recover by itself.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scepd.health import PUBLIC_FAILURE
from scepd.scep.client import parse_cert_rep
from scepd.scep.constants import PkiStatus
from tests.e2e.conftest import CHALLENGE
from tests.e2e.test_operations import scrape, total
from tests.support.daemon import Daemon, init_state, running
from tests.support.scep_client import Client, make_csr, rsa_key


@pytest.fixture(scope="module")
def store_fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path]]:
    state = tmp_path_factory.mktemp("scepd-store-faults")
    mount, image = state / "db", state / "db.ext4"
    mount.mkdir()
    with image.open("wb") as f:
        f.truncate(8 << 20)
    # ext4, not tmpfs: tmpfs lets a process write through a file it opened before `chattr +i`.
    made = subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-m", "0", "-b", "1024", str(image)], capture_output=True, text=True
    )
    mounted = (
        made.returncode == 0
        and subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True, text=True).returncode
        == 0
    )
    if not mounted:
        pytest.skip(f"cannot make and loop-mount a small ext4 file system (root needed): {made.stderr.strip()}")
    try:
        init_state(state, CHALLENGE, extra_toml="")
        config = state / "scepd.toml"
        config.write_text(config.read_text().replace('path = "scepd.sqlite3"', 'path = "db/scepd.sqlite3"'))
        with running(state, CHALLENGE) as d:
            yield d, mount
    finally:
        subprocess.run(["chattr", "-i", *map(str, mount.glob("scepd.sqlite3*"))], capture_output=True)
        subprocess.run(["umount", str(mount)], check=True)


def _fill(mount: Path) -> Path:
    """Fill the file system to the last byte: ENOSPC for whoever writes next."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    finally:
        os.close(fd)
    return filler


def _ready(d: Daemon, base: str, status: int, timeout: float = 10) -> dict:  # type: ignore[type-arg]
    """/readyz on `base` once it answers `status`; fails if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{base}/readyz", timeout=15)
        if r.status_code == status or time.monotonic() > deadline:
            assert r.status_code == status, r.text
            return r.json()  # type: ignore[no-any-return]
        time.sleep(0.2)


async def _enroll_status(client: Client, cn: str) -> tuple[httpx.Response, str]:
    key = rsa_key()
    tid = os.urandom(8).hex()
    body = client.message(make_csr(key, cn, CHALLENGE), key, transaction_id=tid)
    r = await client.post(body)
    if r.status_code == 200:
        rep = parse_cert_rep(r.content, decrypt_key=key, trusted_signers=client.ca_certs)
        assert rep.status is PkiStatus.SUCCESS, rep
    return r, tid


def _signs(d: Daemon) -> float:
    return total(scrape(d), "scepd_key_operation_seconds_count", operation="sign")


async def _episode(d: Daemon, client: Client, kind: str, reason: str, n: int = 3) -> list[str]:
    """With the fault in place: every enrollment is a 503 with Retry-After, and nothing is signed once the
    fault is known; /readyz says so on both listeners. Returns the refused transaction IDs."""
    refused = []
    first, tid = await _enroll_status(client, f"{kind}-first")
    assert first.status_code == 503, (first.status_code, first.text)
    refused.append(tid)
    signs = _signs(d)
    for i in range(n):
        r, tid = await _enroll_status(client, f"{kind}-{i}")
        assert r.status_code == 503, (r.status_code, r.text)
        assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) > 0
        refused.append(tid)
    assert _signs(d) == signs  # the store was known to fail: no certificate (nor CertRep) was signed
    detail = _ready(d, d.metrics_base or "", 503)
    assert detail["checks"]["store"]["ok"] is False
    assert reason in detail["checks"]["store"]["reason"], detail
    assert detail["checks"]["token"]["ok"] is True
    public = _ready(d, d.base_url, 503)
    assert public["checks"]["store"] == {"ok": False, "reason": PUBLIC_FAILURE}
    assert "SQLITE" not in httpx.get(f"{d.base_url}/readyz", timeout=15).text
    assert total(scrape(d), "scepd_store_errors_total", kind=kind) >= n + 1
    return refused


async def _recovered(d: Daemon, client: Client, name: str) -> None:
    _ready(d, d.metrics_base or "", 200)
    _ready(d, d.base_url, 200)
    r, _ = await _enroll_status(client, f"{name}-after")
    assert r.status_code == 200, (r.status_code, r.text)


async def test_store_faults_are_503_and_recover(store_fs: tuple[Daemon, Path]) -> None:
    d, mount = store_fs
    db = mount / "scepd.sqlite3"
    async with httpx.AsyncClient(timeout=30) as http:
        client = Client(d.url, http)
        await client.get_ca_cert()
        ok, _ = await _enroll_status(client, "before")
        assert ok.status_code == 200

        filler = _fill(mount)
        refused = await _episode(d, client, "full", "SQLITE_FULL")
        filler.unlink()
        await _recovered(d, client, "full")

        files = [str(p) for p in (db, db.with_name(db.name + "-wal")) if p.exists()]
        subprocess.run(["chattr", "+i", *files], check=True)
        try:
            refused += await _episode(d, client, "io", "SQLITE_IOERR")
        finally:
            subprocess.run(["chattr", "-i", *files], check=True)
        await _recovered(d, client, "io")

        holder = sqlite3.connect(db, isolation_level=None, timeout=0)
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock past busy_timeout (5 s)
        try:
            r, tid = await _enroll_status(client, "locked")
            assert r.status_code == 503 and "retry-after" in r.headers, (r.status_code, r.text)
            refused.append(tid)
        finally:
            holder.rollback()
            holder.close()
        # Scraped after the lock is gone: the scrape's readiness probe would wait out the 5 s timeout too.
        assert total(scrape(d), "scepd_store_errors_total", kind="locked") >= 1
        await _recovered(d, client, "locked")

    assert d.alive()
    log = d.log()
    assert "Traceback" not in log and " 500 " not in log
    # One event per episode, with its cause, and one when it cleared; not one per request.
    lines = log.splitlines()
    for kind in ("full", "io", "locked"):
        started = [x for x in lines if "event=store_fault " in x and f" kind={kind} cause=" in x]
        cleared = [x for x in lines if "event=store_fault_cleared " in x and f" kind={kind} " in x]
        assert len(started) == 1 and len(cleared) == 1, (kind, started, cleared)
    # Nothing delivered that is not recorded: every 200 above is in the store, none of the 503s is.
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stored = {row[0] for row in conn.execute("SELECT transaction_id FROM certificates")}
    finally:
        conn.close()
    assert not stored & set(refused)
    assert len([x for x in log.splitlines() if "audit=issued" in x]) == len(stored)
    # A certificate signed as the fault struck (before it was known) is dropped and accounted for.
    assert log.count("audit=not_delivered") <= 3
