"""The Entra app's certificate credential, with its key generated on the token.

Entra accepts a certificate (its public part uploaded to the app
registration) in place of a client secret; the JWT assertions it signs are
then made on the token like every other private-key operation of scepd, and
no secret file exists to be copied.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from scepd.ca.authority import self_signed
from scepd.ca.certificates import key_identifier
from scepd.keys.pkcs11.config import TokenConfig
from scepd.keys.pkcs11.pool import TokenPool, generate_key, key_exists


async def create_app_credential(
    token: TokenConfig, label: str, subject: x509.Name, cert_path: Path, validity: dt.timedelta, now: dt.datetime
) -> x509.Certificate:
    """Generate an RSA-2048 key on the token (RS256 needs RSA) and write a self-signed certificate."""
    if key_exists(token, label):
        raise FileExistsError(f"a key labelled {label!r} already exists on the token")
    generate_key(token, label, "rsa", size=2048)
    extensions = [
        x509.Extension(x509.BasicConstraints.oid, True, x509.BasicConstraints(ca=False, path_length=None)),
        x509.Extension(
            x509.KeyUsage.oid, True, x509.KeyUsage(True, False, False, False, False, False, False, False, False)
        ),
        x509.Extension(x509.ExtendedKeyUsage.oid, False, x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])),
    ]
    async with TokenPool.open(replace(token, workers=0)) as pool:
        signer = pool.key(label)
        extensions.append(x509.Extension(x509.SubjectKeyIdentifier.oid, False, key_identifier(signer.public_key)))
        der = await self_signed(signer, subject, now, validity, extensions)
    cert = x509.load_der_x509_certificate(der)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert
