"""Creating a CA on the token: key pair, self-signed certificate or CSR, RA.

Key pairs are generated on the token (sensitive, never extractable); only
certificates and requests, which are public, are written to disk. The CA key
is sign-only; the RA key opens envelopes and signs CertReps, and gets the
persistent implicit-rejection secret its envelope handling needs (docs/keys.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scepd.ca.authority import ca_extensions, ra_certificate, self_signed_ca
from scepd.ca.certificates import sign_csr
from scepd.files import write_atomically
from scepd.keys.base import HashName
from scepd.keys.pkcs11 import pool as pkcs11
from scepd.keys.pkcs11.config import TokenConfig
from scepd.keys.pkcs11.pool import TokenPool, generate_key, key_exists


@dataclass(frozen=True)
class KeySpec:
    kind: str = "rsa"  # rsa | ec
    size: int = 3072  # RSA bits
    curve: str = "P-256"  # EC curve
    decrypt: bool = False  # CKA_DECRYPT/CKA_UNWRAP: only for a key that opens envelopes (RA, lone CA)

    def generate(self, token: TokenConfig, label: str) -> None:
        if self.kind == "rsa":
            if self.size not in (2048, 3072, 4096):
                raise ValueError("RSA key size must be 2048, 3072 or 4096")
            generate_key(token, label, "rsa", size=self.size, decrypt=self.decrypt)
        elif self.kind == "ec":
            if self.curve not in ("P-256", "P-384"):
                raise ValueError("EC curve must be P-256 or P-384")
            if self.decrypt:
                raise ValueError("a key that opens SCEP envelopes must be RSA")
            generate_key(token, label, "ec", curve=self.curve)
        else:
            raise ValueError("key type must be rsa or ec")


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def _write_public(path: Path, data: bytes) -> None:
    # 0644: public; readable by the service user and by relying parties' tooling.
    write_atomically(path, data, 0o644)


async def init_ca(
    token: TokenConfig,
    label: str,
    cert_path: Path,
    subject: x509.Name,
    spec: KeySpec,
    validity: dt.timedelta,
    now: dt.datetime,
    hash: HashName = HashName.SHA256,
) -> x509.Certificate:
    """Generate the CA key on the token and write its self-signed certificate.

    `spec.decrypt` makes the lone-CA layout of earlier versions (the CA key
    also opens envelopes, its certificate has keyEncipherment); without it the
    CA only signs and needs an RA (`init_ra`).
    """
    if key_exists(token, label):
        raise FileExistsError(f"a key labelled {label!r} already exists on the token")
    spec.generate(token, label)
    async with TokenPool.open(replace(token, workers=0)) as pool:
        der = await self_signed_ca(pool.key(label), subject, now, validity, hash, opens_envelopes=spec.decrypt)
    _write_public(cert_path, _pem(der))
    return x509.load_der_x509_certificate(der)


async def ca_request(
    token: TokenConfig, label: str, subject: x509.Name, spec: KeySpec | None, hash: HashName = HashName.SHA256
) -> bytes:
    """A PEM CSR for the token key (generated first if `spec` is given), for an enterprise root."""
    if spec is not None:
        if key_exists(token, label):
            raise FileExistsError(f"a key labelled {label!r} already exists on the token")
        spec.generate(token, label)
    async with TokenPool.open(replace(token, workers=0)) as pool:
        signer = pool.key(label)
        exts = [
            e
            for e in ca_extensions(signer.public_key, opens_envelopes=spec is not None and spec.decrypt)
            if e.oid != x509.AuthorityKeyIdentifier.oid
        ]
        der = await sign_csr(subject, signer, exts, hash)
    return x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM)


async def import_ca_certificate(token: TokenConfig, label: str, cert_pem: bytes, cert_path: Path) -> x509.Certificate:
    """Accept the enterprise root's answer only if it certifies the token key as a CA."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    async with TokenPool.open(replace(token, workers=0)) as pool:
        if cert.public_key() != pool.key(label).public_key:
            raise ValueError("the certificate does not belong to the CA key on the token")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise ValueError("the certificate is not a CA certificate (basicConstraints cA=TRUE missing)")
    _write_public(cert_path, cert_pem)
    return cert


async def init_ra(
    token: TokenConfig,
    ca_label: str,
    ca_cert: x509.Certificate,
    ra_label: str,
    ra_cert_path: Path,
    subject: x509.Name,
    size: int,
    validity: dt.timedelta,
    now: dt.datetime,
    hash: HashName = HashName.SHA256,
) -> x509.Certificate:
    """An RSA RA key on the token, its certificate signed by the CA (NDES-style), its rejection secret."""
    if key_exists(token, ra_label):
        raise FileExistsError(f"a key labelled {ra_label!r} already exists on the token")
    KeySpec("rsa", size, decrypt=True).generate(token, ra_label)
    pkcs11.ensure_reject_secret(token, ra_label)
    return await issue_ra_certificate(token, ca_label, ca_cert, ra_label, ra_cert_path, subject, validity, now, hash)


async def issue_ra_certificate(
    token: TokenConfig,
    ca_label: str,
    ca_cert: x509.Certificate,
    ra_label: str,
    ra_cert_path: Path,
    subject: x509.Name,
    validity: dt.timedelta,
    now: dt.datetime,
    hash: HashName = HashName.SHA256,
) -> x509.Certificate:
    """A (new) CA-signed certificate for the RA key already on the token, written atomically.

    Renewal keeps the key: clients that cached the RA certificate keep
    encrypting to a key that still opens their envelopes.
    """
    async with TokenPool.open(replace(token, workers=0)) as pool:
        ca_key = pool.key(ca_label)
        if ca_key.public_key != ca_cert.public_key():
            raise ValueError(f"the CA certificate does not belong to the key {ca_label!r} on the token")
        der = await ra_certificate(ca_key, ca_cert, pool.key(ra_label).public_key, subject, now, validity, hash)
    _write_public(ra_cert_path, _pem(der))
    return x509.load_der_x509_certificate(der)


async def renew_ra(
    token: TokenConfig,
    ca_label: str,
    ca_cert: x509.Certificate,
    ra_label: str,
    ra_cert_path: Path,
    validity: dt.timedelta,
    now: dt.datetime,
    hash: HashName = HashName.SHA256,
) -> x509.Certificate:
    """Replace the RA certificate by a new one for the same key and subject."""
    old = x509.load_pem_x509_certificate(ra_cert_path.read_bytes())
    async with TokenPool.open(replace(token, workers=0)) as pool:
        if pool.key(ra_label).public_key != old.public_key():
            raise ValueError(f"{ra_cert_path} does not belong to the RA key {ra_label!r} on the token")
    return await issue_ra_certificate(
        token, ca_label, ca_cert, ra_label, ra_cert_path, old.subject, validity, now, hash
    )
