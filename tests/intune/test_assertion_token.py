"""Client assertions signed on the real SoftHSM2 token: PS256 (RSA-PSS, MGF1-SHA256, 32-byte
salt) with an x5t#S256 header by default, checked with `cryptography` and accepted by the fake
Entra; through a token worker process, as the daemon runs it."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from scepd.intune.auth import ClientCertificate, PssSigner
from scepd.intune.credential import create_app_credential
from scepd.keys.base import HashName, UnsupportedParameters
from scepd.keys.pkcs11.config import TokenConfig
from scepd.keys.pkcs11.pool import TokenPool, generate_key
from tests.intune.conftest import tokens_for
from tests.support.fake_intune.state import FakeIntune

GRAPH = "https://graph.microsoft.com/.default"


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def token_credential(cfg: TokenConfig, tmp_path: Path) -> tuple[str, x509.Certificate]:
    label = f"intune-app-{uuid.uuid4().hex[:8]}"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scepd Intune app (test)")])
    cert = await create_app_credential(
        cfg, label, subject, tmp_path / "app.pem", dt.timedelta(days=30), dt.datetime.now(dt.UTC)
    )
    return label, cert


@pytest.mark.parametrize("workers", [0, 1])
async def test_ps256_assertion_signed_on_the_token(
    token_config: Callable[..., TokenConfig], fake_intune: FakeIntune, tmp_path: Path, workers: int
) -> None:
    label, cert = await token_credential(token_config(), tmp_path)
    fake_intune.add_client_certificate(cert)
    async with TokenPool.open(replace(token_config(), workers=workers)) as pool:
        signer = pool.key(label)
        assert isinstance(signer, PssSigner)
        credential = ClientCertificate(cert, signer)  # the default algorithm
        assert credential.algorithm == "PS256"
        async with httpx.AsyncClient() as http:
            tokens = tokens_for(fake_intune, http, credential)
            assert await tokens.token(GRAPH)
    [call] = fake_intune.calls("token")
    assert call.status == 200
    head, claims, signature = call.body["client_assertion"].split(".")
    header = json.loads(b64url_decode(head))
    der = cert.public_bytes(Encoding.DER)
    assert header["alg"] == "PS256" and "x5t" not in header
    assert b64url_decode(header["x5t#S256"]) == hashlib.sha256(der).digest()
    assert json.loads(b64url_decode(claims))["iss"] == fake_intune.client_id
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    signed = f"{head}.{claims}".encode()
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), salt_length=32)
    public.verify(b64url_decode(signature), signed, pss, hashes.SHA256())
    # Not PKCS#1 v1.5, and not PSS with another salt length: the parameters are the ones PS256 names.
    with pytest.raises(InvalidSignature):
        public.verify(b64url_decode(signature), signed, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        public.verify(b64url_decode(signature), signed, padding.PSS(padding.MGF1(hashes.SHA256()), 20), hashes.SHA256())


async def test_pss_signatures_differ_and_rs256_stays_available(
    token_config: Callable[..., TokenConfig], fake_intune: FakeIntune, tmp_path: Path
) -> None:
    label, cert = await token_credential(token_config(), tmp_path)
    fake_intune.add_client_certificate(cert)
    async with TokenPool.open(token_config()) as pool:
        key = pool.key(label)
        one, two = await key.sign_pss(b"data", HashName.SHA256), await key.sign_pss(b"data", HashName.SHA256)
        assert one != two  # a random salt each time
        credential = ClientCertificate(cert, key, algorithm="RS256")
        async with httpx.AsyncClient() as http:
            tokens = tokens_for(fake_intune, http, credential)
            assert await tokens.token(GRAPH)
    [call] = fake_intune.calls("token")
    header = json.loads(b64url_decode(call.body["client_assertion"].split(".")[0]))
    assert call.status == 200 and header["alg"] == "RS256" and "x5t" in header


async def test_ec_key_refuses_pss(token_config: Callable[..., TokenConfig]) -> None:
    label = f"intune-ec-{uuid.uuid4().hex[:8]}"
    generate_key(token_config(), label, "ec", curve="P-256")
    async with TokenPool.open(token_config()) as pool:
        with pytest.raises(UnsupportedParameters, match="not an RSA key"):
            await pool.key(label).sign_pss(b"data", HashName.SHA256)
