"""What a software TPM does through tpm2-pkcs11: operation rates, and whether threads may share it.

    PYTHONPATH=. .venv/bin/python bench/tpm_token.py [--ops 100]

Starts its own swtpm + D-Bus + tpm2-abrmd (tests/support/tpm.py) in a temporary
directory, creates a token, and prints:

* operations per second on one session, in one thread (RSA-2048 sign and
  decrypt, P-256 sign);
* two threads, each with its own session, signing at once (what
  python-pkcs11's C_Initialize(NULL) allows: tpm2-pkcs11 then takes no locks);
* the same load through scepd's TokenPool with workers=0 (one token thread)
  and workers=2 (two processes), from 20 Trio tasks: rate and errors.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scepd.keys.base import HashName, RsaPadding
from scepd.keys.pkcs11.config import TokenConfig
from scepd.keys.pkcs11.pool import TokenPool, generate_key
from scepd.keys.pkcs11.session import TokenSession
from scepd.keys.tpm import create_token
from tests.support.tpm import MODULE, TCTI, SoftwareTpm


def rate(name: str, op: object, n: int) -> None:
    started = time.perf_counter()
    for _ in range(n):
        op()  # type: ignore[operator]
    print(f"  {name}: {n / (time.perf_counter() - started):.0f}/s")


def two_threads(n: int) -> None:
    """The child of main(): two threads, each with its own session, signing at once."""
    cfg = TokenConfig(
        MODULE, "bench", sys.stdin.read(), tpm2_pkcs11_store=os.environ["TPM2_PKCS11_STORE"], tpm2_tcti=TCTI
    )
    errors: list[str] = []
    sessions = [TokenSession(cfg) for _ in range(2)]  # opened one after the other; only the signing overlaps

    def signer(own: TokenSession) -> None:
        for _ in range(n):
            status, value = own.dispatch("sign", ("ra", "SHA256_RSA_PKCS", b"y" * 50))
            if status != "ok":
                errors.append(value)

    threads = [threading.Thread(target=signer, args=(own,)) for own in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{len(errors)} errors {errors[:1]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=100)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pin-fd", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        two_threads(args.threads)
        return
    n = args.ops
    with tempfile.TemporaryDirectory() as tmp:
        tpm = SoftwareTpm.start(Path(tmp))
        try:
            os.environ.update(tpm.env)
            pin = secrets.token_urlsafe(12)
            create_token("bench", secrets.token_urlsafe(12), pin, store=str(tpm.store), tcti=TCTI)
            cfg = TokenConfig(MODULE, "bench", pin, tpm2_pkcs11_store=str(tpm.store), tpm2_tcti=TCTI)
            ra_pub = generate_key(cfg, "ra", "rsa", size=2048, decrypt=True)
            generate_key(cfg, "ec", "ec", curve="P-256")
            assert isinstance(ra_pub, rsa.RSAPublicKey)
            block = ra_pub.encrypt(os.urandom(16), padding.PKCS1v15())

            print("one session, one thread:")
            s = TokenSession(cfg)
            rate("RSA-2048 sign (SHA256_RSA_PKCS)", lambda: s.sign("ra", "SHA256_RSA_PKCS", b"x" * 100), n)
            rate("RSA-2048 unwrap (RSA_PKCS + rejection HMAC)", lambda: s.unwrap("ra", None, block, 16), n)
            rate("P-256 sign (ECDSA)", lambda: s.sign("ec", "ECDSA", b"x" * 32), n)

            s.close()
            # In a child process: without locks in tpm2-pkcs11 this may crash the process outright.
            child = subprocess.run(
                [sys.executable, __file__, "--threads", str(n), "--pin-fd", "0"],
                input=pin,
                text=True,
                capture_output=True,
                env=dict(os.environ),
            )
            outcome = child.stdout.strip() or f"the process died (exit status {child.returncode})"
            print(f"two threads, own sessions, {2 * n} signs: {outcome}")

            async def pool_load(workers: int) -> None:
                failed = 0
                async with TokenPool.open(replace(cfg, workers=workers)) as pool:
                    ra, ec = pool.key("ra"), pool.key("ec")

                    async def task(i: int) -> None:
                        nonlocal failed
                        for j in range(i, 2 * n, 20):
                            try:
                                if j % 3 == 0:
                                    await ra.unwrap(block, RsaPadding.PKCS1V15, None, 16)
                                else:
                                    await (ra if j % 3 == 1 else ec).sign(b"z", HashName.SHA256)
                            except Exception:  # noqa: BLE001 - counted
                                failed += 1

                    started = time.perf_counter()
                    async with trio.open_nursery() as nursery:
                        for i in range(20):
                            nursery.start_soon(task, i)
                    took = time.perf_counter() - started
                print(
                    f"TokenPool workers={workers}, 20 tasks, {2 * n} mixed ops: {2 * n / took:.0f}/s, {failed} errors"
                )

            for workers in (0, 2):
                trio.run(pool_load, workers)
        finally:
            tpm.stop()


if __name__ == "__main__":
    main()
