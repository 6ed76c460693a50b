"""How scepd behaves with a large store: start-up, CRL, enrollment rate, metrics scrape, memory.

    python -m bench.store_size --state DIR -n 1000000 --revoked 200000 [--enrollments 300 -c 4] [--rounds 2]

DIR is made with `scepd init` on first use. N certificates are seeded straight
into a copy of the store with executemany (issued over the last two years,
valid one year, so about half have expired; `--revoked` of them revoked at
random, with a reason), kept as DIR/large-N.sqlite3 for the next run. Then a
real `scepd serve` runs on a fresh store and on the large one, alternately
(`--rounds`; the large store's first start is made without a stored CRL, as
after an upgrade), and for each start the script reports:

- start-up: seconds from exec to the first GetCACert answer;
- CRL: the `event=crl_published` line (entries, bytes, seconds to read the
  store, encode and sign on the token) and GetCRL answer time at start-up;
- enrollment rate with bench/loadgen.py (the same pre-built requests for both);
- metrics scrape time (median and worst of 20);
- RSS of the daemon and its token workers (VmRSS and peak VmHWM, kB).

The daemon runs under `nice` when --nice is given (the machine is shared).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import trio

from bench import loadgen

REPO = Path(__file__).resolve().parent.parent

CHALLENGE = "store-size-bench"
REASONS = ("keyCompromise", "superseded", "cessationOfOperation", "affiliationChanged", None)
_SERVING = re.compile(r"serving SCEP at (http://\S+?)(/\S*) ")
_METRICS = re.compile(r"serving metrics at (http://\S+?)/metrics")
_CRL = re.compile(r"event=crl_published number=(\d+) revoked=(\d+) bytes=(\d+) seconds=([\d.]+)")


def ensure_state(state: Path) -> None:
    if not (state / "scepd.toml").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "scepd",
                "init",
                "--state",
                str(state),
                "--listen",
                "127.0.0.1:0",
                "--challenge",
                CHALLENGE,
                "--workers",
                "2",
            ],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )


def config_for(state: Path, store: str) -> Path:
    path = state / f"{Path(store).stem}.toml"
    text = (state / "scepd.toml").read_text()
    text = text.replace('path = "scepd.sqlite3"', f'path = "{store}"').replace(
        'file = "ca.crl"', f'file = "{Path(store).stem}.crl"'
    )
    path.write_text(text)
    return path


def _ts(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seed(path: Path, n: int, revoked: int, der: bytes) -> float:
    """N certificate rows in one file (schema made by scepd itself); seconds taken."""
    import trio as _trio

    from scepd.store.sqlite import SqliteStore

    async def create() -> None:
        async with SqliteStore.open(path):
            pass

    _trio.run(create)
    started = time.perf_counter()
    rng = random.Random(14)
    now = dt.datetime.now(dt.UTC)
    revoked_rows = set(rng.sample(range(n), revoked))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    batch: list[tuple[object, ...]] = []

    def flush() -> None:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO certificates (serial, transaction_id, subject, requester, csr_sha256, profile, not_before,"
            " not_after, issued_at, status, der, revoked_at, revocation_reason)"
            " VALUES (?, ?, ?, ?, ?, 'default', ?, ?, ?, ?, ?, ?, ?)",
            batch,
        )
        conn.execute("COMMIT")
        batch.clear()

    for i in range(n):
        issued = now - dt.timedelta(seconds=rng.randrange(730 * 86400))
        not_after = issued + dt.timedelta(days=365)
        status, at, reason = "valid", None, None
        if i in revoked_rows:
            span = max(1, int((min(now, not_after) - issued).total_seconds()))
            status, at = "revoked", _ts(issued + dt.timedelta(seconds=rng.randrange(span)))
            reason = REASONS[i % len(REASONS)]
        batch.append(
            (
                f"{rng.getrandbits(127) | 1 << 126:x}",
                f"{rng.getrandbits(128):032x}",
                f"CN=device-{i}",
                f"CN=device-{i}",
                f"{rng.getrandbits(256):064x}",
                _ts(issued),
                _ts(not_after),
                _ts(issued),
                status,
                der,
                at,
                reason,
            )
        )
        if len(batch) == 50_000:
            flush()
    if batch:
        flush()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - started


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) summed over the daemon and its token workers."""
    rss = hwm = 0
    for p in loadgen.process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
        except OSError:
            pass
    return rss, hwm


class Daemon:
    def __init__(self, config: Path, nice: bool) -> None:
        argv = [sys.executable, "-m", "scepd", "serve", "--config", str(config)]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            (["nice", "-n", "5"] if nice else []) + argv,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.lines: list[str] = []
        self.url: str | None = None
        self.metrics: str | None = None
        self.ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if (m := _METRICS.search(line)) and self.metrics is None:
                self.metrics = m.group(1) + "/metrics"
            if (m := _SERVING.search(line)) and self.url is None:
                self.url = m.group(1) + m.group(2)
                self.ready.set()

    def first_answer(self, timeout: float = 600) -> float:
        if not self.ready.wait(timeout):
            raise RuntimeError("no start:\n" + "".join(self.lines))
        assert self.url is not None
        while True:
            r = httpx.get(self.url, params={"operation": "GetCACert"}, timeout=60)
            if r.status_code == 200:
                return time.perf_counter() - self.started
            time.sleep(0.01)

    def crl_lines(self) -> list[tuple[int, int, int, float]]:
        return [(int(m[1]), int(m[2]), int(m[3]), float(m[4])) for line in self.lines if (m := _CRL.search(line))]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def scrape(url: str, times: int = 20) -> tuple[float, float]:
    spent = []
    with httpx.Client(timeout=30) as http:
        for _ in range(times):
            t0 = time.perf_counter()
            http.get(url).raise_for_status()
            spent.append(time.perf_counter() - t0)
    return statistics.median(spent) * 1000, max(spent) * 1000


def measure(label: str, config: Path, args: argparse.Namespace, messages: list) -> dict[str, float]:  # type: ignore[type-arg]
    d = Daemon(config, args.nice)
    try:
        start = d.first_answer()
        assert d.url is not None and d.metrics is not None
        t0 = time.perf_counter()
        # The CRL as a relying party fetches it (crl.path on the SCEP listener), at start-up.
        crl_url = d.url.rsplit("/", 1)[0] + "/crl/ca.crl"
        r = httpx.get(crl_url, timeout=120)
        crl_fetch = time.perf_counter() - t0 if r.status_code == 200 else float("nan")
        deadline = time.monotonic() + 120
        while not d.crl_lines() and time.monotonic() < deadline:  # the fresh CRL, signed after start-up
            time.sleep(0.05)
        elapsed, _, server_cpu, _, replies = trio.run(
            loadgen.run, d.url, messages, args.clients, args.warmup, d.proc.pid
        )
        ok = sum(1 for r in replies[args.warmup :] if not isinstance(r, int))
        rate = ok / elapsed
        scrape_median, scrape_max = scrape(d.metrics)
        rss, hwm = rss_kb(d.proc.pid)
        crl = d.crl_lines()
        number, entries, size, seconds = crl[-1] if crl else (0, 0, 0, float("nan"))
        print(
            f"{label}: first answer {start:5.2f} s | GetCRL at start {crl_fetch * 1000:7.1f} ms "
            f"({r.status_code}, {len(r.content)} B) | CRL #{number}: {entries} entries, {size} B, built in "
            f"{seconds:.3f} s | {rate:6.1f} enrollments/s ({ok} ok, server CPU {server_cpu:.1f} s) | scrape "
            f"median {scrape_median:.1f} ms, max {scrape_max:.1f} ms | RSS {rss // 1024} MB (peak {hwm // 1024} MB)",
            flush=True,
        )
        return {"start": start, "rate": rate, "crl_seconds": seconds, "scrape_max": scrape_max, "rss": rss}
    finally:
        d.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("-n", type=int, default=1_000_000)
    p.add_argument("--revoked", type=int, default=200_000)
    p.add_argument("--enrollments", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("-c", "--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--nice", action="store_true")
    args = p.parse_args()
    state = args.state.resolve()
    ensure_state(state)
    large = state / f"large-{args.n}.sqlite3"
    if not large.exists():
        der = (state / "ca.pem").read_bytes()  # about a device certificate's size; never parsed here
        tmp = large.with_name(large.name + ".seeding")
        for f in state.glob(tmp.name + "*"):
            f.unlink()
        seconds = seed(tmp, args.n, args.revoked, der)
        tmp.rename(large)
        print(
            f"seeded {args.n} certificates ({args.revoked} revoked) in {seconds:.1f} s; "
            f"{large.stat().st_size // 2**20} MB",
            flush=True,
        )
    fresh = state / "fresh.sqlite3"
    for f in state.glob("fresh.sqlite3*"):
        f.unlink()
    configs = {"fresh": config_for(state, fresh.name), "large": config_for(state, large.name)}
    probe = Daemon(configs["fresh"], False)
    probe.first_answer()
    assert probe.url is not None
    keys = state / "bench-keys.der"
    _, messages = loadgen.prepare(probe.url, CHALLENGE, (args.enrollments + args.warmup) * args.rounds * 2, keys)
    probe.stop()
    per = args.enrollments + args.warmup
    results: dict[str, list[dict[str, float]]] = {"fresh": [], "large": []}
    i = 0
    for round_ in range(args.rounds):
        for label in ("fresh", "large"):
            shown = label
            if label == "large" and round_ == 0:
                # The first start of a large store that holds no CRL yet (as after an upgrade):
                # nothing to serve until the first one is signed.
                with sqlite3.connect(large) as db:
                    db.execute("DELETE FROM crl_current")
                shown = "large, no stored CRL"
            results[label].append(measure(shown, configs[label], args, messages[i * per : (i + 1) * per]))
            i += 1
    fresh_rate = statistics.mean(r["rate"] for r in results["fresh"])
    large_rate = statistics.mean(r["rate"] for r in results["large"])
    print(
        f"enrollment rate, large / fresh: {large_rate / fresh_rate:.3f} "
        f"({large_rate:.1f} / {fresh_rate:.1f} per s, mean of {args.rounds} round(s))"
    )


if __name__ == "__main__":
    main()
