"""A SCEP client for the tests, built on the same sans-IO codec the server uses.

It speaks real HTTP (httpx) to a running daemon, so the tests exercise the
codec from the client's side too, as any reuser of `scepd.scep` would.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from scepd.keys.base import HashName, OaepParams, RsaPadding
from scepd.scep import ContentCipher, parse_certs_only
from scepd.scep.client import CertRep, build_pki_message, issuer_and_subject, make_self_signed, parse_cert_rep
from scepd.scep.constants import MessageType

_RSA_KEYS: list[rsa.RSAPrivateKey] = []


def rsa_key(fresh: bool = False) -> rsa.RSAPrivateKey:
    """RSA-2048 client keys are slow to make; tests reuse a few unless they need a new one."""
    if fresh or len(_RSA_KEYS) < 4:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _RSA_KEYS.append(key)
        return key
    return secrets.choice(_RSA_KEYS)


def make_csr(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    cn: str,
    challenge: str | None,
    sans: list[x509.GeneralName] | None = None,
    hash: hashes.HashAlgorithm | None = None,
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if challenge is not None:
        builder = builder.add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hash or hashes.SHA256())


@dataclass
class Client:
    """One SCEP client identity talking to one endpoint URL."""

    url: str
    http: httpx.AsyncClient
    ca_certs: list[x509.Certificate] = field(default_factory=list)

    async def caps(self) -> list[str]:
        r = await self.http.get(self.url, params={"operation": "GetCACaps"})
        r.raise_for_status()
        return r.text.split()

    async def get_ca_cert(self) -> list[x509.Certificate]:
        r = await self.http.get(self.url, params={"operation": "GetCACert"})
        r.raise_for_status()
        if r.headers["content-type"].startswith("application/x-x509-ca-ra-cert"):
            self.ca_certs = parse_certs_only(r.content)
        else:
            self.ca_certs = [x509.load_der_x509_certificate(r.content)]
        return self.ca_certs

    @property
    def recipient(self) -> x509.Certificate:
        """The certificate to envelope to: the RA if there is one (first), else the CA."""
        return self.ca_certs[0]

    def message(
        self,
        csr: x509.CertificateSigningRequest,
        key: rsa.RSAPrivateKey,
        *,
        message_type: MessageType = MessageType.PKCS_REQ,
        signer: x509.Certificate | None = None,
        transaction_id: str | None = None,
        nonce: bytes | None = None,
        cipher: ContentCipher = ContentCipher.AES256_CBC,
        padding: RsaPadding = RsaPadding.PKCS1V15,
        digest: HashName = HashName.SHA256,
        payload: bytes | None = None,
    ) -> bytes:
        from cryptography.hazmat.primitives import serialization

        now = dt.datetime.now(dt.UTC)
        signer = signer or make_self_signed(key, csr.subject, now)
        return build_pki_message(
            message_type=message_type,
            payload=payload if payload is not None else csr.public_bytes(serialization.Encoding.DER),
            transaction_id=transaction_id or secrets.token_hex(16),
            sender_nonce=nonce or os.urandom(16),
            recipient_certificate=self.recipient,
            cipher=cipher,
            padding=padding,
            oaep=OaepParams() if padding is RsaPadding.OAEP else None,
            signer_certificate=signer,
            signer_key=key,
            digest=digest,
        )

    async def post(self, body: bytes) -> httpx.Response:
        return await self.http.post(
            self.url,
            params={"operation": "PKIOperation"},
            content=body,
            headers={"content-type": "application/x-pki-message"},
        )

    async def get(self, body: bytes) -> httpx.Response:
        return await self.http.get(
            self.url, params={"operation": "PKIOperation", "message": base64.b64encode(body).decode()}
        )

    async def send(self, body: bytes, key: rsa.RSAPrivateKey, *, use_get: bool = False) -> CertRep:
        r = await (self.get(body) if use_get else self.post(body))
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.headers["content-type"] == "application/x-pki-message"
        return parse_cert_rep(r.content, decrypt_key=key, trusted_signers=self.ca_certs)

    async def poll(
        self,
        csr: x509.CertificateSigningRequest,
        key: rsa.RSAPrivateKey,
        signer: x509.Certificate,
        transaction_id: str,
        *,
        use_get: bool = False,
    ) -> CertRep:
        """CertPoll (GetCertInitial) for a held request: same transactionID, same signer key."""
        payload = issuer_and_subject(self.ca_certs[-1].subject, csr.subject)
        body = self.message(
            csr, key, message_type=MessageType.CERT_POLL, signer=signer, transaction_id=transaction_id, payload=payload
        )
        return await self.send(body, key, use_get=use_get)

    async def enroll(self, cn: str, challenge: str | None, **kw: object) -> tuple[CertRep, rsa.RSAPrivateKey]:
        key = rsa_key()
        csr = make_csr(key, cn, challenge)
        rep = await self.send(self.message(csr, key, **kw), key)  # type: ignore[arg-type]
        return rep, key


@asynccontextmanager
async def connected(url: str, timeout: float = 30) -> AsyncIterator[Client]:
    """A Client for `url` that has fetched the CA certificates (GetCACert), on its own HTTP client."""
    async with httpx.AsyncClient(timeout=timeout) as http:
        client = Client(url, http)
        await client.get_ca_cert()
        yield client
