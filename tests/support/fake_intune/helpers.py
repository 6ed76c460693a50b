"""What a device and a SCEP server bring to the fake: CSRs carrying a challenge,
and a client certificate with the RS256 assertion Entra accepts in place of a
secret. Shared by the fake's own tests and by tests of scepd's Intune client.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import time
import uuid
from collections.abc import Sequence

from asn1crypto import core  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AttributeOID, NameOID

from tests.support.fake_intune.csr import UPN_OID
from tests.support.fake_intune.state import b64url
from tests.support.fake_intune.wire import JWT_BEARER


def _general_name(text: str) -> x509.GeneralName:
    kind, _, value = text.partition(":")
    kind = kind.lower()
    if kind == "dns":
        return x509.DNSName(value)
    if kind == "email":
        return x509.RFC822Name(value)
    if kind == "uri":
        return x509.UniformResourceIdentifier(value)
    if kind == "ip":
        return x509.IPAddress(ipaddress.ip_address(value))
    if kind == "upn":
        return x509.OtherName(UPN_OID, core.UTF8String(value).dump())
    raise ValueError(f"unsupported SAN {text!r}")


def make_csr(
    subject: str | None,
    challenge: str | None,
    sans: Sequence[str] = (),
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
) -> bytes:
    """A signed DER PKCS#10 as a device would send it: RFC 4514 subject (None: empty),
    challengePassword attribute (None: absent), SANs as `kind:value`."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string(subject) if subject else x509.Name([])
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(s) for s in sans]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def csr_b64(der: bytes) -> str:
    """certificateRequest as the wire wants it: standard base64, one line (§4)."""
    return base64.b64encode(der).decode("ascii")


def client_certificate(cn: str = "scepd Intune client", days: int = 30) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A throw-away self-signed RSA certificate, like one uploaded to an Entra app."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def client_assertion(
    key: rsa.RSAPrivateKey,
    certificate: x509.Certificate,
    client_id: str,
    token_url: str,
    *,
    lifetime: int = 60,
    now: float | None = None,
    claims: dict[str, object] | None = None,
) -> str:
    """The RS256 JWT of §1.1 (x5t = base64url SHA-1 of the cert DER); `claims` overrides."""
    der = certificate.public_bytes(Encoding.DER)
    header = {
        "alg": "RS256",
        "typ": "JWT",
        "x5t": b64url(hashlib.sha1(der).digest()),
        "x5c": [base64.b64encode(der).decode()],
    }
    issued = int(now if now is not None else time.time())
    body: dict[str, object] = {
        "aud": token_url,
        "iss": client_id,
        "sub": client_id,
        "jti": str(uuid.uuid4()),
        "nbf": issued,
        "exp": issued + lifetime,
    }
    body.update(claims or {})
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(body).encode())
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(signature)


def assertion_form(client_id: str, assertion: str, scope: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        "scope": scope,
    }
