"""Several processes opening one SoftHSM2 token at once, beside one process that signs.

    python -m bench.token_contention --state DIR [--seconds 25] [--parallel 6] [--no-lock]

Each round starts `--parallel` fresh interpreters that each load the module,
find the token and log in (what a starting `scepd serve`, its token workers
and every token-using admin command do), while one long-lived process signs
in a loop (a serving daemon). Prints how many logins and signatures failed
and why. `--no-lock` opens the token without scepd's token lock
(scepd/keys/pkcs11/lock.py), to show the failure it prevents. DIR is made with
softhsm/init-token.sh (or `scepd init`); a key labelled `contention` is made
on first use.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def _config(state: Path):  # type: ignore[no-untyped-def]
    from scepd.keys.pkcs11.config import TokenConfig

    return TokenConfig(
        module=MODULE,
        token_label="scepd",
        pin=(state / "secrets/token.pin").read_text().strip(),
        softhsm2_conf=str(state / "softhsm/softhsm2.conf"),
    )


def _open(state: Path, lock: bool):  # type: ignore[no-untyped-def]
    from scepd.keys.pkcs11 import lock as token_lock
    from scepd.keys.pkcs11 import session as pkcs11_worker

    cfg = _config(state)
    if not lock:  # the session as scepd opened it before the lock existed
        token_lock.lock_path = lambda *a: None  # type: ignore[assignment]
    return pkcs11_worker.TokenSession(cfg)


def signer(state: Path, seconds: float, lock: bool) -> None:
    from scepd.keys.pkcs11 import pool as pkcs11
    from scepd.keys.pkcs11.session import TokenSession

    cfg = _config(state)
    session: TokenSession = _open(state, lock)
    if not session.exists("contention"):
        session.close()
        pkcs11.generate_key(cfg, "contention", "rsa", 2048)
        session = _open(state, lock)
    ok, failed = 0, collections.Counter[str]()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            session.sign("contention", "SHA256_RSA_PKCS", b"x" * 64)
            ok += 1
        except Exception as e:  # noqa: BLE001
            failed[type(e).__name__] += 1
    print(f"signatures ok={ok} failed={sum(failed.values())} {dict(failed)}", flush=True)


def opener(state: Path, lock: bool, at: float) -> None:
    import pkcs11  # noqa: F401 - imported before the start line, so the processes open the token together

    from scepd.keys.pkcs11 import session as pkcs11_worker  # noqa: F401

    time.sleep(max(0.0, at - time.time()))
    try:
        session = _open(state, lock)
        session.inventory()
        session.ping()
        session.close()
        print("ok")
    except Exception as e:  # noqa: BLE001
        print(f"FAILED {type(e).__name__}: {e}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=25)
    p.add_argument("--parallel", type=int, default=6)
    p.add_argument("--no-lock", action="store_true")
    p.add_argument("--role", choices=["signer", "opener"], help=argparse.SUPPRESS)
    p.add_argument("--at", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    state, lock = args.state.resolve(), not args.no_lock
    os.environ["SOFTHSM2_CONF"] = str(state / "softhsm/softhsm2.conf")
    if args.role == "signer":
        return signer(state, args.seconds, lock)
    if args.role == "opener":
        return opener(state, lock, args.at)
    base = [sys.executable, "-m", "bench.token_contention", "--state", str(state)] + (["--no-lock"] if not lock else [])
    sign = subprocess.Popen(base + ["--role", "signer", "--seconds", str(args.seconds)])
    time.sleep(1.5)
    results = collections.Counter[str]()
    end = time.monotonic() + args.seconds - 2
    while time.monotonic() < end:
        at = str(time.time() + 1.0)  # every opener of the round opens the token at this instant
        procs = [
            subprocess.Popen(base + ["--role", "opener", "--at", at], stdout=subprocess.PIPE, text=True)
            for _ in range(args.parallel)
        ]
        for proc in procs:
            results[proc.communicate()[0].strip()] += 1
    sign.wait()
    total = sum(results.values())
    print(f"logins={total} failed={total - results['ok']} ({'with' if lock else 'WITHOUT'} the token lock)")
    for line, n in results.most_common():
        if line != "ok":
            print(f"  {n} x {line}")


if __name__ == "__main__":
    main()
