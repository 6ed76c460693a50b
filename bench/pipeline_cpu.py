"""CPU of one enrollment inside scepd, without HTTP and without the token.

    .venv/bin/python -m bench.pipeline_cpu [-n 300] [--profile [--sort cumulative]] [--json]

Runs `ScepService.pki_operation` (parse, verify, decrypt, CSR check, static
challenge, profile, idempotent retry, SQLite store, sign, CertRep) on
pre-built PKCSReq messages, with an RSA-2048 CA key held in process, and
prints the CPU time per enrollment. The three in-process RSA-2048 private-key
operations are measured alone and subtracted, which leaves scepd's own cost:
the part that `bench/run.py` compares with what the token spends. `--profile`
prints the functions that take the most of it.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import os
import pstats
import secrets
import tempfile
import time
from pathlib import Path

import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scepd.ca.authority import CertificateAuthority
from scepd.challenge.static import StaticChallenge
from scepd.enroll.pipeline import compose
from scepd.enroll.profiles import Profile, ProfileStep
from scepd.enroll.service import ScepService
from scepd.enroll.steps import IdempotentRetry, SignCertificate, StoreIssued
from scepd.keys.software import SoftwareKey
from scepd.scep.client import build_pki_message, make_self_signed, parse_cert_rep
from scepd.scep.constants import MessageType, PkiStatus
from scepd.store.sqlite import SqliteStore
from tests.support.scep_client import make_csr

CHALLENGE = "bench"


async def make_ca() -> tuple[CertificateAuthority, SoftwareKey]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from scepd.ca.authority import self_signed_ca

    key = SoftwareKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), label="bench-ca")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pipeline bench CA")])
    now = dt.datetime.now(dt.UTC)
    cert = x509.load_der_x509_certificate(await self_signed_ca(key, subject, now, dt.timedelta(days=365)))
    return CertificateAuthority(certificate=cert, signer=key, ra_certificate=cert, ra_key=key), key


def private_ops_ms(key: rsa.RSAPrivateKey, n: int = 200) -> float:
    """CPU of two RSA-2048 signs and one decrypt, in process: what the token would do."""
    ciphertext = key.public_key().encrypt(os.urandom(32), padding.PKCS1v15())
    start = time.process_time()
    for _ in range(n):
        key.sign(b"x" * 600, padding.PKCS1v15(), hashes.SHA256())
        key.sign(b"y" * 900, padding.PKCS1v15(), hashes.SHA256())
        key.decrypt(ciphertext, padding.PKCS1v15())
    return (time.process_time() - start) * 1000 / n


async def main(n: int, profile: bool, sort: str, as_json: bool) -> None:
    ca, ca_key = await make_ca()
    clients = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(8)]
    now = dt.datetime.now(dt.UTC)
    messages = []
    for i in range(n):
        key = clients[i % len(clients)]
        csr = make_csr(key, f"bench-{i}-{secrets.token_hex(4)}", CHALLENGE)
        signer = make_self_signed(key, csr.subject, now)
        body = build_pki_message(
            message_type=MessageType.PKCS_REQ,
            payload=csr.public_bytes(serialization.Encoding.DER),
            transaction_id=secrets.token_hex(16),
            sender_nonce=os.urandom(16),
            recipient_certificate=ca.certificate,
            signer_certificate=signer,
            signer_key=key,
        )
        messages.append((body, key))
    with tempfile.TemporaryDirectory() as tmp:
        async with SqliteStore.open(Path(tmp) / "bench.sqlite3") as store:
            profile_ = Profile()
            chain = compose(
                [StaticChallenge(CHALLENGE), ProfileStep(profile_), IdempotentRetry(store), StoreIssued(store)],
                SignCertificate(ca, {"default": profile_}),
            )
            service = ScepService(ca=ca, store=store, chain=chain, endpoint="bench", challenge_mode="static")
            replies = []
            prof = cProfile.Profile() if profile else None
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            if prof:
                prof.enable()
            for body, _ in messages:
                replies.append(await service.pki_operation(body))
            if prof:
                prof.disable()
            cpu = (time.process_time() - start_cpu) * 1000 / n
            wall = (time.perf_counter() - start_wall) * 1000 / n
    for reply, (_, key) in zip(replies, messages):
        assert parse_cert_rep(reply, decrypt_key=key, trusted_signers=[ca.certificate]).status is PkiStatus.SUCCESS
    token = private_ops_ms(ca_key.private_key)  # type: ignore[arg-type]
    if as_json:
        print(json.dumps({"n": n, "cpu_ms": cpu, "wall_ms": wall, "private_ops_ms": token, "own_cpu_ms": cpu - token}))
        return
    print(
        f"pki_operation: n={n} cpu={cpu:.2f} ms/enrollment wall={wall:.2f} ms "
        f"(process CPU, all threads; SQLite fsync waits are wall time only)"
    )
    print(f"in-process RSA-2048 private-key operations (2 signs + 1 decrypt): {token:.2f} ms")
    print(f"scepd's own CPU per enrollment, without HTTP: {cpu - token:.2f} ms")
    if prof:
        pstats.Stats(prof).sort_stats(sort).print_stats(40 if sort == "cumulative" else 25)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sort", default="tottime", choices=["tottime", "cumulative"], help="--profile's order")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the text lines")
    args = ap.parse_args()
    trio.run(main, args.n, args.profile, args.sort, args.json)
