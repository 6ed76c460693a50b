"""Client assertions (contract §1.1) as the fake Entra checks them: PS256 with x5t#S256 by
default, RS256 with x5t by setting. A codec test: the key is in memory; the e2e test
tests/e2e/test_intune.py signs on the token."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from scepd.intune.auth import ClientCertificate, TokenSource
from scepd.keys.base import HashName
from tests.support.fake_intune.helpers import client_certificate
from tests.support.fake_intune.state import FakeIntune


class MemorySigner:
    """RSA PKCS#1 v1.5 and PSS with an in-memory key."""

    label = "memory"

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key

    @property
    def public_key(self) -> PublicKeyTypes:
        return self.key.public_key()

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    async def sign_pss(self, data: bytes, hash: HashName) -> bytes:
        return self.key.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())


class V15Signer(MemorySigner):
    sign_pss = None  # type: ignore[assignment]


def header_of(assertion: str) -> dict[str, object]:
    part = assertion.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]


@pytest.mark.parametrize("algorithm", ["PS256", "RS256"])
async def test_entra_takes_the_assertion(fake_intune: FakeIntune, algorithm: str) -> None:
    key, cert = client_certificate()
    fake_intune.add_client_certificate(cert)
    credential = ClientCertificate(cert, MemorySigner(key), algorithm=algorithm)
    async with httpx.AsyncClient() as http:
        tokens = TokenSource(
            http,
            authority=fake_intune.authority,
            tenant=fake_intune.tenant,
            client_id=fake_intune.client_id,
            credential=credential,
            retries=0,
        )
        assert await tokens.token("https://graph.microsoft.com/.default")
    [call] = fake_intune.calls("token")
    header = header_of(call.body["client_assertion"])
    assert header["alg"] == algorithm
    if algorithm == "PS256":
        assert "x5t#S256" in header and "x5t" not in header
    else:
        assert "x5t" in header and "x5t#S256" not in header


def test_default_is_ps256_and_needs_a_pss_capable_key() -> None:
    key, cert = client_certificate()
    assert ClientCertificate(cert, MemorySigner(key)).algorithm == "PS256"
    with pytest.raises(ValueError, match="RSA-PSS"):
        ClientCertificate(cert, V15Signer(key))
    assert ClientCertificate(cert, V15Signer(key), algorithm="RS256").algorithm == "RS256"
