"""Raw RSA private-key operations on scepd's token through PKCS#11: the ceiling.

Opens the token and the CA key named by a scepd configuration (the daemon's
own config loading and TokenPool, nothing duplicated) and measures, for the
private-key operations an enrollment costs (about three: open the request's
envelope, sign the certificate, sign the CertRep):

* ``direct``: TokenSession.sign/decrypt in a loop on this thread: the bare
  PKCS#11 call, no pool, no event loop. Its CPU per operation is what the
  token itself spends, and the budget the daemon is compared with.
* ``handoff``: the same signs, each handed from this thread to the token
  thread and waited for with ``Future.result()``: what a thread hand-off
  alone costs, without an event loop.
* ``trio-1task``: Pkcs11Key.sign/decrypt through a TokenPool with its one
  in-process token thread, one operation at a time from one Trio task: the
  hand-off plus waking the event loop, as one enrollment at a time sees it.
* ``workers=0``: the same from `--tasks` concurrent Trio tasks, as the
  daemon does it under load.
* ``workers=N``: the same through N worker processes, from 2N tasks.
* with ``--gil``, ``busy@INTERVAL``: the ``direct`` sign loop again while
  another thread of this process runs pure Python, as the event loop does
  under load, at each `sys.setswitchinterval` given. A token call releases
  the GIL during the PKCS#11 call but must take it back to return: this is
  what that costs (docs/benchmarks.md, "The GIL and the token thread").

For each it prints operations per second and CPU milliseconds per
operation: this process and, for worker mode, its worker processes.

    python -m bench.token_signs --config STATE/scepd.toml [-n 2000] [--workers 0,2] [--gil 0.005,0.00005] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench.loadgen import cpu_seconds
from scepd.config import load
from scepd.keys.base import HashName, RsaPadding
from scepd.keys.pkcs11.config import TokenConfig
from scepd.keys.pkcs11.pool import TokenPool, token_thread
from scepd.keys.pkcs11.session import TokenSession
from scepd.wiring import key_label, token_config

# What the daemon signs and decrypts: a tbsCertificate / signed attributes, and a CEK.
TBS = os.urandom(900)
CEK = os.urandom(32)


def _result(mode: str, op: str, n: int, seconds: float, cpu: float, tasks: int) -> dict[str, object]:
    return {
        "mode": mode,
        "op": op,
        "n": n,
        "tasks": tasks,
        "seconds": seconds,
        "per_second": n / seconds,
        "cpu_ms": cpu / n * 1000,
    }


def direct(
    cfg: TokenConfig, label: str, n: int, ciphertext: bytes | None, mode: str = "direct"
) -> list[dict[str, object]]:
    """The bare PKCS#11 calls, on the module's own thread (one thread per module and process).

    Without a ciphertext, only the signs are measured."""

    def bench() -> list[dict[str, object]]:
        session = TokenSession(cfg)
        try:
            out = []
            session.sign(label, "SHA256_RSA_PKCS", TBS)  # warm: key handle, module
            ops = [("sign", lambda: session.sign(label, "SHA256_RSA_PKCS", TBS))]
            if ciphertext is not None:
                ops.append(("unwrap", lambda: session.unwrap(label, None, ciphertext, len(CEK))))
            for op, call in ops:
                t0, c0 = time.perf_counter(), time.thread_time()
                for _ in range(n):
                    call()
                out.append(_result(mode, op, n, time.perf_counter() - t0, time.thread_time() - c0, 1))
            return out
        finally:
            session.close()

    return token_thread(cfg.module).submit(bench).result()


def handed_off(cfg: TokenConfig, label: str, n: int) -> list[dict[str, object]]:
    """Signs submitted one by one to the token thread from this one, without an event loop."""
    thread = token_thread(cfg.module)
    session = thread.submit(TokenSession, cfg).result()
    try:
        thread.submit(session.sign, label, "SHA256_RSA_PKCS", TBS).result()  # warm
        t0, c0 = time.perf_counter(), cpu_seconds(os.getpid())
        for _ in range(n):
            thread.submit(session.sign, label, "SHA256_RSA_PKCS", TBS).result()
        return [_result("handoff", "sign", n, time.perf_counter() - t0, cpu_seconds(os.getpid()) - c0, 1)]
    finally:
        thread.submit(session.close).result()


def beside_busy_thread(cfg: TokenConfig, label: str, n: int, interval: float) -> list[dict[str, object]]:
    """Direct signs on the token thread while a second thread keeps the GIL busy with Python."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(200))

    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        return direct(cfg, label, n, None, mode=f"busy@{interval:g}")
    finally:
        stop.set()
        spinner.join()
        sys.setswitchinterval(previous)


async def pooled(
    cfg: TokenConfig, label: str, n: int, tasks: int, ciphertext: bytes, mode: str = ""
) -> list[dict[str, object]]:
    """Through TokenPool/Pkcs11Key, as the daemon calls the token, from `tasks` Trio tasks."""
    mode = mode or f"workers={cfg.workers}"
    out = []
    async with TokenPool.open(cfg) as pool:
        key = pool.key(label)
        assert isinstance(key.public_key, rsa.RSAPublicKey)

        async def sign() -> None:
            await key.sign(TBS, HashName.SHA256)

        async def decrypt() -> None:
            assert (await key.unwrap(ciphertext, RsaPadding.PKCS1V15, None, len(CEK))).key == CEK

        for op, call in (("sign", sign), ("unwrap", decrypt)):
            await run_tasks(call, tasks * 4, tasks)  # warm every worker
            t0, c0 = time.perf_counter(), cpu_seconds(os.getpid())
            await run_tasks(call, n, tasks)
            out.append(_result(mode, op, n, time.perf_counter() - t0, cpu_seconds(os.getpid()) - c0, tasks))
    return out


async def run_tasks(call: Callable[[], Awaitable[None]], n: int, tasks: int) -> None:
    todo = iter(range(n))

    async def worker() -> None:
        for _ in todo:
            await call()

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--config", required=True, type=Path, help="scepd TOML; its token and ca.ra_key (else ca.key) are used"
    )
    ap.add_argument("-n", type=int, default=2000, help="operations per measurement")
    ap.add_argument("--workers", default="0,2", help="comma-separated token.workers values to measure")
    ap.add_argument("--tasks", type=int, default=4, help="concurrent tasks for workers=0 (workers=N uses 2N)")
    ap.add_argument("--gil", default="", help="also sign beside a busy Python thread, at these switch intervals (s)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    config = load(args.config)
    cfg = token_config(config)
    # The key that opens envelopes: the RA on the default layout (the CA only signs), else the lone CA.
    label = key_label(config.ca.ra_key or config.ca.key)
    results: list[dict[str, object]] = []

    async def public_key() -> rsa.RSAPublicKey:
        async with TokenPool.open(replace(cfg, workers=0)) as pool:
            pub = pool.key(label).public_key
            assert isinstance(pub, rsa.RSAPublicKey), "the key must be RSA"
            return pub

    pub = trio.run(public_key)
    ciphertext = pub.encrypt(CEK, padding.PKCS1v15())
    results += direct(cfg, label, args.n, ciphertext)
    results += handed_off(cfg, label, args.n)
    results += trio.run(pooled, replace(cfg, workers=0), label, args.n, 1, ciphertext, "trio-1task")
    for interval in (float(i) for i in args.gil.split(",") if i):
        results += beside_busy_thread(cfg, label, args.n, interval)
    for workers in (int(w) for w in args.workers.split(",")):
        tasks = args.tasks if workers == 0 else 2 * workers
        results += trio.run(pooled, replace(cfg, workers=workers), label, args.n, tasks, ciphertext)

    info = {"key": label, "key_bits": pub.key_size, "token": cfg.token_label, "module": cfg.module, "results": results}
    if args.json:
        print(json.dumps(info), flush=True)
    else:
        print(f"token {cfg.token_label!r} ({cfg.module}), key {label!r}: RSA-{pub.key_size}")
        for r in results:
            print(
                f"  {r['mode']:<10} {r['op']:<8} tasks={r['tasks']:<2} n={r['n']:<5} "
                f"{r['per_second']:8.1f}/s  cpu={r['cpu_ms']:.3f} ms/op",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
