"""Enrollments on a TPM-backed scepd against what the TPM itself allows (issue 18, item 5).

    PYTHONPATH=. .venv/bin/python -m bench.tpm_enroll [-n 60] [--cycles 60] [--concurrency 4 8]

Starts its own software TPM (swtpm + private D-Bus + tpm2-abrmd, tests/support/tpm.py)
in a temporary directory, makes the TPM default there with `scepd init --token tpm`
(RSA-3072 CA key, RSA-2048 RA key, `workers = 0`), and measures in one run:

(a) the ceiling: the token operations one enrollment costs, through scepd's TokenPool
    with the daemon's own token settings, from 4 Trio tasks: RA unwrap of the envelope's
    content key, RA signature of the reply, CA signature of the certificate. Cycles of
    those three per second is the most enrollments per second this TPM can give;
(b) `scepd serve` on loopback, enrolled by bench/loadgen.py's client (fresh RSA-2048
    keys, messages built before the clock) at each concurrency: enrollments per second
    and their ratio to (a);
(c) while 8 clients keep the TPM saturated, the latency of GetCACaps, GetCACert, the CRL,
    /metrics and /readyz, asked one after the other every 50 ms by a process of its own (not the
    load generator's): p50, p99 and max; first for 5 s on the idle daemon, as the baseline of
    this machine.

The TPM is not touched by (a) while (b) runs: the pool is closed before scepd starts.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench import loadgen
from scepd.config import load
from scepd.keys.base import HashName, RsaPadding
from scepd.keys.pkcs11.pool import TokenPool
from scepd.wiring import key_label, token_config
from tests.support.tpm import TCTI, SoftwareTpm

CHALLENGE = "bench-tpm-challenge"
_SERVING = re.compile(r"serving SCEP at (http://\S+?/scep) ")
_METRICS = re.compile(r"serving metrics at (http://\S+?)/metrics")


async def ceiling(state: Path, cycles: int, tasks: int = 4) -> tuple[float, dict[str, float], int]:
    """Enrollment-sized token cycles per second, each operation's mean time alone (ms), and the errors."""
    config = load(state / "scepd.toml")
    assert config.ca.ra_key is not None
    async with TokenPool.open(token_config(config)) as pool:
        ca, ra = pool.key(key_label(config.ca.key)), pool.key(key_label(config.ca.ra_key))
        ra_pub = ra.public_key
        assert isinstance(ra_pub, rsa.RSAPublicKey)
        block = ra_pub.encrypt(os.urandom(16), padding.PKCS1v15())
        tbs, signed_attrs = os.urandom(900), os.urandom(250)  # a certificate's TBS; a CertRep's signed attributes
        spent = {"RA unwrap": 0.0, "RA sign (RSA-2048)": 0.0, "CA sign (RSA-3072)": 0.0}
        errors = 0

        async def timed(name: str, op: Any) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                await op
            except Exception:  # noqa: BLE001 - counted and reported
                errors += 1
            spent[name] += time.perf_counter() - t0

        async def worker(queue: Any) -> None:
            for _ in queue:
                await timed("RA unwrap", ra.unwrap(block, RsaPadding.PKCS1V15, None, 16))
                await timed("CA sign (RSA-3072)", ca.sign(tbs, HashName.SHA256))
                await timed("RA sign (RSA-2048)", ra.sign(signed_attrs, HashName.SHA256))

        for _ in range(3):  # warm-up: sessions, login, key handles
            await ra.sign(b"w", HashName.SHA256)
        # Each operation's own time: one task, nothing queued behind or in front of it.
        alone = max(cycles // 3, 5)
        await worker(iter(range(alone)))
        share = {name: t / alone * 1000 for name, t in spent.items()}
        # The rate: 4 tasks, as from a daemon with requests in flight (one token thread serialises them).
        queue = iter(range(cycles))
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(worker, queue)
        took = time.perf_counter() - started
    return cycles / took, share, errors


def probe_while_saturated(
    url: str, metrics: str, messages: list[tuple[Any, bytes]], concurrency: int
) -> tuple[dict[str, list[float]], tuple[float, float, float | None, list[float], list[bytes | int]] | None]:
    """Latency of the cheap endpoints while `messages` are enrolled `concurrency` at a time.

    The prober runs in a process of its own: in the load generator's event loop, a probe's answer
    would wait while the loop handles enrollment replies, and that wait is the bench's, not scepd's.
    """
    base = url.rsplit("/", 1)[0]
    targets = {
        "GetCACaps": (url, {"operation": "GetCACaps"}),
        "GetCACert": (url, {"operation": "GetCACert"}),
        "CRL": (f"{base}/crl/ca.crl", None),
        "/metrics": (f"{metrics}/metrics", None),
        "/readyz": (f"{metrics}/readyz", None),
    }
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    results, send = ctx.Pipe(duplex=False)
    prober = ctx.Process(target=probe, args=(targets, ready, stop, send), daemon=True)
    prober.start()
    try:
        if not ready.wait(60):
            raise SystemExit("the prober process did not start")
        if messages:
            run = trio.run(loadgen.run, url, messages, concurrency)
        else:  # the baseline: the same probes on an idle daemon, on the same machine
            time.sleep(6)
            run = None
    finally:
        stop.set()
    seen, bad = results.recv()
    prober.join(30)
    if bad:
        print(f"  probe answers other than 200: {len(bad)}, e.g. {bad[:3]}")
    return seen, run


def probe(targets: dict[str, tuple[str, Any]], ready: Any, stop: Any, send: Any) -> None:
    """The prober process: each target one after the other every 50 ms, 1 s after `ready`, until `stop`."""

    async def loop() -> tuple[dict[str, list[float]], list[str]]:
        seen: dict[str, list[float]] = {name: [] for name in targets}
        bad: list[str] = []
        async with httpx.AsyncClient(timeout=30) as http:
            ready.set()
            await trio.sleep(1.0)  # let the load reach the TPM first
            while not stop.is_set():
                for name, (target, params) in targets.items():
                    t0 = time.perf_counter()
                    r = await http.get(target, params=params)
                    seen[name].append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        bad.append(f"{name}: HTTP {r.status_code}")
                await trio.sleep(0.05)
        return seen, bad

    send.send(trio.run(loop))


def serve(state: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "scepd", "serve", "--config", str(state / "scepd.toml")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    found: dict[str, str] = {}
    both = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            for key, rx in (("url", _SERVING), ("metrics", _METRICS)):
                if (m := rx.search(line)) and key not in found:
                    found[key] = m.group(1)
            if len(found) == 2:
                both.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 60
    while not both.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("scepd did not start:\n" + "".join(output))
    return proc, found["url"], found["metrics"], output


def report_load(label: str, messages: list[tuple[Any, bytes]], run: Any, ca_certs: Any, ceiling_rate: float) -> None:
    elapsed, _, _, latencies, replies = run
    ok, failures = loadgen.check(messages, replies[len(replies) - len(messages) :], ca_certs)
    rate = len(messages) / elapsed
    print(
        f"  {label}: n={len(messages)} ok={ok} {rate:.1f} enrollments/s, ratio to the ceiling {rate / ceiling_rate:.2f}, "
        f"p50={loadgen.pct(latencies, 50) * 1000:.0f} ms p99={loadgen.pct(latencies, 99) * 1000:.0f} ms"
        + (f" failures={failures}" if failures else "")
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=60, help="timed enrollments per concurrency")
    ap.add_argument("--cycles", type=int, default=60, help="token cycles (unwrap + 2 signs) for the ceiling")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--saturate", type=int, default=120, help="enrollments at c=8 while probing (c)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tpm = SoftwareTpm.start(Path(tmp) / "tpm")
        proc: subprocess.Popen[str] | None = None
        try:
            env = dict(os.environ, PYTHONUNBUFFERED="1", **tpm.env)
            os.environ.update(tpm.env)
            state = Path(tmp) / "state"
            init = [sys.executable, "-m", "scepd", "init", "--state", str(state), "--token", "tpm"]
            init += ["--tcti", TCTI, "--listen", "127.0.0.1:0", "--challenge", CHALLENGE]
            subprocess.run(init, env=env, check=True, stdout=subprocess.DEVNULL)
            os.chdir(state)  # the config's relative paths

            def tpm_cpu() -> float:
                return sum(loadgen.cpu_seconds(p.pid) for p in tpm.procs.values())

            cpu0, own0 = tpm_cpu(), time.process_time()
            rate, share, errors = trio.run(ceiling, state, args.cycles)
            cpu = (tpm_cpu() - cpu0) * 1000 / (args.cycles + max(args.cycles // 3, 5) + 3)
            own = (time.process_time() - own0) * 1000 / (args.cycles + max(args.cycles // 3, 5) + 3)
            print(f"(a) TPM ceiling, TokenPool workers=0, 4 tasks, {args.cycles} cycles, {errors} errors:")
            print(f"  {rate:.1f} enrollments/s (" + ", ".join(f"{k} {v:.1f} ms" for k, v in share.items()) + ")")
            print(f"  CPU per cycle: swtpm + tpm2-abrmd + dbus {cpu:.1f} ms, this process {own:.1f} ms")

            proc, url, metrics, output = serve(state, env)
            total = sum(4 + args.n for _ in args.concurrency) + args.saturate
            ca_certs, messages = loadgen.prepare(url, CHALLENGE, total, Path(tmp) / "keys")
            print("(b) scepd over HTTP, messages built before the clock, 4 untimed first:")
            for c in args.concurrency:
                batch, messages = messages[: 4 + args.n], messages[4 + args.n :]
                cpu0 = tpm_cpu()
                run = trio.run(loadgen.run, url, batch, c, 4, proc.pid)
                report_load(f"c={c}", batch[4:], run, ca_certs, rate)
                print(
                    f"    CPU per enrollment: scepd {run[2] / args.n * 1000:.1f} ms, load generator "
                    f"{run[1] / args.n * 1000:.1f} ms, swtpm + tpm2-abrmd + dbus (with warm-up) "
                    f"{(tpm_cpu() - cpu0) / (args.n + 4) * 1000:.1f} ms"
                )
            for title, load in (("idle daemon, no enrollments", []), (f"{args.saturate} enrollments at c=8", messages)):
                print(f"(c) probes, {title}:")
                seen, loaded = probe_while_saturated(url, metrics, load, 8)
                if loaded is not None:
                    report_load("load", load, loaded, ca_certs, rate)
                for name, values in seen.items():
                    values.sort()
                    print(
                        f"  {name}: {len(values)} probes, p50={loadgen.pct(values, 50) * 1000:.1f} ms "
                        f"p99={loadgen.pct(values, 99) * 1000:.1f} ms max={values[-1] * 1000:.1f} ms"
                    )
        finally:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            tpm.stop()
            os.chdir("/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
