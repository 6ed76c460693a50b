"""Does the strict-DER fast reader (scepd/strict_der.py) still pay for itself?

Parses the same PKCSReq the way the daemon does on every request
(parse_pki_message: SignedData, attributes, signer, signature check; then
parse_envelope), first with the fast reader, then with it switched off so
asn1crypto reads everything, and prints the CPU per request of each.

    PYTHONPATH=. python bench/strict_der.py [--n 2000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from scepd.scep import envelope, message, signed_view
from scepd.scep.client import build_pki_message, make_self_signed
from scepd.scep.constants import MessageType


def request() -> bytes:
    now = dt.datetime.now(dt.UTC)
    ra_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ra_cert = make_self_signed(ra_key, x509.Name.from_rfc4514_string("CN=bench RA"), now)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name.from_rfc4514_string("CN=device-1,O=bench")
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return build_pki_message(
        payload=csr.public_bytes(Encoding.DER),
        message_type=MessageType.PKCS_REQ,
        transaction_id="bench-transaction",
        sender_nonce=os.urandom(16),
        recipient_certificate=ra_cert,
        signer_certificate=make_self_signed(key, subject, now),
        signer_key=key,
    )


def per_request(data: bytes, n: int) -> float:
    """CPU seconds per parse of `data` (message and envelope), best of three rounds."""

    def once() -> None:
        msg = message.parse_pki_message(data)  # reads the envelope too (parse_envelope)
        assert msg.envelope is not None

    once()
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(n):
            once()
        best = min(best, (time.process_time() - start) / n)
    return best


def general_only() -> Callable[[], None]:
    """Route every parse to asn1crypto, as if the fast reader were gone; returns the undo."""
    saved_signed, saved_env = message.read_signed, envelope._strict_envelope
    message.read_signed = signed_view._Asn1Signed  # type: ignore[assignment]
    envelope._strict_envelope = lambda data: None  # type: ignore[assignment]

    def undo() -> None:
        message.read_signed, envelope._strict_envelope = saved_signed, saved_env  # type: ignore[assignment]

    return undo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    data = request()
    fast = per_request(data, args.n)
    undo = general_only()
    try:
        general = per_request(data, args.n)
    finally:
        undo()
    print(f"request {len(data)} bytes, {args.n} parses per round, best of 3")
    print(f"strict-DER reader:  {fast * 1e6:8.1f} us CPU per request")
    print(f"asn1crypto only:    {general * 1e6:8.1f} us CPU per request")
    print(f"saved by the fast reader: {(general - fast) * 1e6:.1f} us ({(1 - fast / general) * 100:.0f} %)")


if __name__ == "__main__":
    main()
