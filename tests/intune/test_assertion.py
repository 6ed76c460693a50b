"""Client assertions (contract §1.1) as the fake Entra checks them: PS256 with x5t#S256 by
default, RS256 with x5t by setting. A codec test: the key is in memory; the e2e test
tests/e2e/test_intune.py signs on the token."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from scepd.intune.auth import ClientCertificate
from scepd.keys.base import HashName, UnsupportedParameters
from scepd.keys.software import SoftwareKey
from tests.intune.conftest import tokens_for
from tests.support.fake_intune.helpers import client_certificate
from tests.support.fake_intune.state import FakeIntune


class V15Key(SoftwareKey):
    """A key backend that signs PKCS#1 v1.5 only."""

    sign_pss = None  # type: ignore[assignment]


def header_of(assertion: str) -> dict[str, object]:
    part = assertion.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]


@pytest.mark.parametrize("algorithm", ["PS256", "RS256"])
async def test_entra_takes_the_assertion(fake_intune: FakeIntune, algorithm: str) -> None:
    key, cert = client_certificate()
    fake_intune.add_client_certificate(cert)
    credential = ClientCertificate(cert, SoftwareKey(key), algorithm=algorithm)
    async with httpx.AsyncClient() as http:
        tokens = tokens_for(fake_intune, http, credential)
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
    assert ClientCertificate(cert, SoftwareKey(key)).algorithm == "PS256"
    with pytest.raises(ValueError, match="RSA-PSS"):
        ClientCertificate(cert, V15Key(key))
    assert ClientCertificate(cert, V15Key(key), algorithm="RS256").algorithm == "RS256"


class NoPssSigner(SoftwareKey):
    """Has sign_pss, but its backend refuses it (an EC key, a token without the mechanism)."""

    async def sign_pss(self, data: bytes, hash: HashName) -> bytes:
        raise UnsupportedParameters("no RSA-PSS here")


async def test_refused_pss_falls_back_to_rs256_once(fake_intune: FakeIntune, caplog: pytest.LogCaptureFixture) -> None:
    key, cert = client_certificate()
    fake_intune.add_client_certificate(cert)
    credential = ClientCertificate(cert, NoPssSigner(key))
    async with httpx.AsyncClient() as http:
        tokens = tokens_for(fake_intune, http, credential)
        assert await tokens.token("https://graph.microsoft.com/.default")
        assert await tokens.token("https://api.manage.microsoft.com//.default")
    calls = fake_intune.calls("token")
    assert [header_of(c.body["client_assertion"])["alg"] for c in calls] == ["RS256", "RS256"]
    assert all(c.status == 200 for c in calls)
    assert caplog.text.count("event=intune_assertion_fallback") == 1
