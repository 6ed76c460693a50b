"""Thousands of token operations in flight at once on a TPM, through scepd's TokenPool (issue 18, item 2).

    PYTHONPATH=. .venv/bin/python -m bench.tpm_stress [--tasks 2000] [--workers 0 2]

Starts its own software TPM (swtpm + private D-Bus + tpm2-abrmd, tests/support/tpm.py)
in a temporary directory, creates a token with an RSA-2048 key that signs and unwraps
and a P-256 key, then, for each `token.workers` setting, starts --tasks Trio tasks at
once, each with one operation: an RSA-2048 signature, a P-256 signature, the unwrap of
a good PKCS#1 v1.5 block or of random bytes (the implicit-rejection path, which leaves a
tpm2-pkcs11 session needing repair). Every answer is checked: signatures verify, good
blocks give their key, bad blocks give a key of the asked size. Prints the rate, the most
operations in flight at once, the latency from start to answer, the errors and the
wrong answers (both must be 0).

tests/keys/test_tpm.py runs the same mix from 40 tasks in the suite; this is the
long version, kept out of the suite for its minutes of TPM time.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import trio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from scepd.keys.base import HashName, RsaPadding
from scepd.keys.pkcs11.config import TokenConfig
from scepd.keys.pkcs11.pool import TokenPool, generate_key
from scepd.keys.tpm import create_token
from tests.support.tpm import MODULE, TCTI, SoftwareTpm

KINDS = ("RSA-2048 sign", "P-256 sign", "unwrap good block", "unwrap bad block")


async def storm(cfg: TokenConfig, tasks: int, rsa_pub: rsa.RSAPublicKey, ec_pub: ec.EllipticCurvePublicKey) -> None:
    cek = os.urandom(16)
    good = rsa_pub.encrypt(cek, padding.PKCS1v15())
    errors: Counter[str] = Counter()
    wrong: Counter[str] = Counter()
    latencies: list[float] = []
    in_flight = peak = 0
    async with TokenPool.open(cfg) as pool:
        ra, ecc = pool.key("ra"), pool.key("ec")

        async def one(i: int) -> None:
            nonlocal in_flight, peak
            kind = KINDS[i % 4]
            data = f"message {i}".encode()
            in_flight += 1
            peak = max(peak, in_flight)
            t0 = trio.current_time()
            try:
                if kind == "RSA-2048 sign":
                    sig = await ra.sign(data, HashName.SHA256)
                    rsa_pub.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
                elif kind == "P-256 sign":
                    sig = await ecc.sign(data, HashName.SHA256)
                    ec_pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
                elif kind == "unwrap good block":
                    if (await ra.unwrap(good, RsaPadding.PKCS1V15, None, 16)).key != cek:
                        wrong[kind] += 1
                else:
                    got = await ra.unwrap(os.urandom(256), RsaPadding.PKCS1V15, None, 16)
                    if len(got.key) != 16 or got.key == cek:
                        wrong[kind] += 1
            except InvalidSignature:
                wrong[kind] += 1
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors[f"{kind}: {type(e).__name__}: {e}"[:160]] += 1
            finally:
                latencies.append(trio.current_time() - t0)
                in_flight -= 1

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(tasks):
                nursery.start_soon(one, i)
        took = time.perf_counter() - started
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        f"workers={cfg.workers}: {tasks} tasks ({tasks // 4} of each kind), {tasks / took:.1f} ops/s in {took:.0f} s, "
        f"peak in flight {peak}, latency p50={q[49]:.1f} s p99={q[98]:.1f} s max={latencies[-1]:.1f} s, "
        f"errors={sum(errors.values())}, wrong answers={sum(wrong.values())}"
    )
    for what, count in (errors + wrong).most_common(5):
        print(f"  {count} x {what}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tpm = SoftwareTpm.start(Path(tmp))
        try:
            os.environ.update(tpm.env)
            pin = secrets.token_urlsafe(12)
            create_token("stress", secrets.token_urlsafe(12), pin, store=str(tpm.store), tcti=TCTI)
            cfg = TokenConfig(MODULE, "stress", pin, tpm2_pkcs11_store=str(tpm.store), tpm2_tcti=TCTI)
            rsa_pub = generate_key(cfg, "ra", "rsa", size=2048, decrypt=True)
            ec_pub = generate_key(cfg, "ec", "ec", curve="P-256")
            assert isinstance(rsa_pub, rsa.RSAPublicKey) and isinstance(ec_pub, ec.EllipticCurvePublicKey)
            for workers in args.workers:
                trio.run(storm, replace(cfg, workers=workers), args.tasks, rsa_pub, ec_pub)
        finally:
            tpm.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
