"""SCEP enrollment load generator: N fresh RSA-2048 clients at concurrency C.

Keys, CSRs and PKCSReq messages are all built before the clock starts (a
fresh RSA-2048 key costs the client far more than the server's work), so the
timed window measures the server: POST, wait, check the reply's status. The
replies are then opened and each certificate is checked against the CA
outside the timed window.

    python bench/loadgen.py --url http://127.0.0.1:8080/scep --challenge X -n 400 -c 8 [--pid PID]

With --pid, the server's CPU time (its own and its child processes', such as
token workers) is read from /proc before and after, and reported per enrollment.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import trio  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from scepd.scep import parse_certs_only  # noqa: E402
from scepd.scep.client import build_pki_message, make_self_signed, parse_cert_rep  # noqa: E402
from scepd.scep.constants import MessageType, PkiStatus  # noqa: E402
from tests.scep_client import make_csr  # noqa: E402

_CLK = os.sysconf("SC_CLK_TCK")


def _keygen(_: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cpu_seconds(pid: int) -> float:
    """utime+stime of pid and its children still running (token worker processes)."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _CLK


def fetch_ca(url: str) -> list[x509.Certificate]:
    r = httpx.get(url, params={"operation": "GetCACert"}, timeout=30)
    r.raise_for_status()
    if r.headers["content-type"].startswith("application/x-x509-ca-ra-cert"):
        return parse_certs_only(r.content)
    return [x509.load_der_x509_certificate(r.content)]


def prepare(url: str, challenge: str, n: int) -> tuple[list[x509.Certificate], list[tuple[rsa.RSAPrivateKey, bytes]]]:
    ca_certs = fetch_ca(url)
    with ProcessPoolExecutor() as pool:
        keys = [serialization.load_der_private_key(d, None) for d in pool.map(_keygen, range(n))]
    messages = []
    now = __import__("datetime").datetime.now(__import__("datetime").timezone.utc)
    for i, key in enumerate(keys):
        assert isinstance(key, rsa.RSAPrivateKey)
        csr = make_csr(key, f"bench-{i}-{secrets.token_hex(4)}", challenge)
        body = build_pki_message(
            message_type=MessageType.PKCS_REQ,
            payload=csr.public_bytes(serialization.Encoding.DER),
            transaction_id=secrets.token_hex(16),
            sender_nonce=os.urandom(16),
            recipient_certificate=ca_certs[0],
            signer_certificate=make_self_signed(key, csr.subject, now),
            signer_key=key,
        )
        messages.append((key, body))
    return ca_certs, messages


async def run(url: str, messages: list[tuple[rsa.RSAPrivateKey, bytes]], concurrency: int) -> tuple[float, list[float], list[bytes]]:
    latencies: list[float] = []
    replies: list[bytes] = [b""] * len(messages)
    queue = iter(enumerate(messages))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:

        async def worker() -> None:
            for i, (_, body) in queue:
                t0 = time.perf_counter()
                r = await http.post(url, params={"operation": "PKIOperation"}, content=body,
                                    headers={"content-type": "application/x-pki-message"})
                latencies.append(time.perf_counter() - t0)
                r.raise_for_status()
                replies[i] = r.content

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - start
    return elapsed, latencies, replies


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 else values[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--challenge", required=True)
    ap.add_argument("-n", type=int, default=400, help="enrollments (fresh RSA-2048 clients)")
    ap.add_argument("-c", type=int, default=8, help="concurrency")
    ap.add_argument("--pid", type=int, help="server PID, to report its CPU time per enrollment")
    ap.add_argument("--label", default="server")
    args = ap.parse_args()

    ca_certs, messages = prepare(args.url, args.challenge, args.n)
    cpu0 = cpu_seconds(args.pid) if args.pid else 0.0
    elapsed, latencies, replies = trio.run(run, args.url, messages, args.c)
    cpu1 = cpu_seconds(args.pid) if args.pid else 0.0

    ok = 0
    for (key, _), reply in zip(messages, replies):
        rep = parse_cert_rep(reply, decrypt_key=key, trusted_signers=ca_certs)
        if rep.status is PkiStatus.SUCCESS and rep.certificates:
            rep.certificates[0].verify_directly_issued_by(ca_certs[-1])
            ok += 1
    rate = args.n / elapsed
    line = (f"{args.label}: n={args.n} c={args.c} ok={ok} {rate:.1f} enrollments/s "
            f"p50={pct(latencies, 50) * 1000:.1f}ms p95={pct(latencies, 95) * 1000:.1f}ms "
            f"p99={pct(latencies, 99) * 1000:.1f}ms")
    if args.pid:
        line += f" server_cpu={((cpu1 - cpu0) / args.n) * 1000:.2f}ms/enrollment"
    print(line, flush=True)
    return 0 if ok == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
