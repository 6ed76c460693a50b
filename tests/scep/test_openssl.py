"""Interoperability with the OpenSSL CLI, as an implementation we did not write."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from scepd.keys.base import RsaPadding
from scepd.scep import ContentCipher, build_cert_rep, build_envelope, open_envelope, parse_envelope, sign_cert_rep
from scepd.scep.constants import FailInfo, PkiStatus
from tests.scep.conftest import Party

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
pytestmark = pytest.mark.skipif(not Path(OPENSSL).exists(), reason="openssl CLI not installed")


def openssl(*args: str, input: bytes | None = None) -> bytes:
    done = subprocess.run([OPENSSL, *args], input=input, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def write_party(tmp_path: Path, party: Party, stem: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{stem}.pem", tmp_path / f"{stem}.key"
    cert.write_bytes(party.cert.public_bytes(Encoding.PEM))
    key.write_bytes(party.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return cert, key


@pytest.mark.parametrize("signer_name", ["ra", "ec_ra"])
async def test_openssl_verifies_success_cert_rep(
    tmp_path: Path, request: pytest.FixtureRequest, requester: Party, signer_name: str
) -> None:
    signer: Party = request.getfixturevalue(signer_name)
    draft = build_cert_rep(
        transaction_id="t-openssl",
        recipient_nonce=os.urandom(16),
        sender_nonce=os.urandom(16),
        status=PkiStatus.SUCCESS,
        certificates=[signer.der],
        recipient_certificate=requester.cert,
        signer_certificate=signer.cert,
    )
    rep = tmp_path / "rep.der"
    rep.write_bytes(await sign_cert_rep(draft, signer.soft))
    out = openssl("cms", "-verify", "-inform", "DER", "-noverify", "-binary", "-in", str(rep))
    assert out == cms.ContentInfo.load(rep.read_bytes())["content"]["encap_content_info"]["content"].native
    # And OpenSSL can open the envelope we made for the requester.
    env = tmp_path / "env.der"
    env.write_bytes(out)
    cert, key = write_party(tmp_path, requester, "req")
    inner = openssl(
        "cms", "-decrypt", "-inform", "DER", "-binary", "-in", str(env), "-inkey", str(key), "-recip", str(cert)
    )
    assert cms.ContentInfo.load(inner)["content"]["certificates"][0].chosen.dump() == signer.der


async def test_openssl_verifies_failure_cert_rep(tmp_path: Path, ra: Party) -> None:
    draft = build_cert_rep(
        transaction_id="t-fail",
        recipient_nonce=os.urandom(8),
        sender_nonce=os.urandom(16),
        status=PkiStatus.FAILURE,
        fail_info=FailInfo.BAD_CERT_ID,
        fail_info_text="unknown",
        signer_certificate=ra.cert,
    )
    rep, empty = tmp_path / "rep.der", tmp_path / "empty"
    rep.write_bytes(await sign_cert_rep(draft, ra.soft))
    empty.write_bytes(b"")
    out = openssl("cms", "-verify", "-inform", "DER", "-noverify", "-binary", "-in", str(rep), "-content", str(empty))
    assert out == b""


@pytest.mark.parametrize(
    "cipher_flag,cipher",
    [("-aes256", ContentCipher.AES256_CBC), ("-aes128", ContentCipher.AES128_CBC), ("-des3", ContentCipher.DES3_CBC)],
)
@pytest.mark.parametrize("oaep", [False, True])
async def test_openssl_envelope_opens(
    tmp_path: Path, ra: Party, cipher_flag: str, cipher: ContentCipher, oaep: bool
) -> None:
    cert, _ = write_party(tmp_path, ra, "ra")
    payload = os.urandom(333)
    args = ["cms", "-encrypt", "-binary", "-outform", "DER", cipher_flag, "-recip", str(cert)]
    if oaep:
        args += ["-keyopt", "rsa_padding_mode:oaep"]
    env = parse_envelope(openssl(*args, input=payload))
    assert env.cipher is cipher
    assert env.padding is (RsaPadding.OAEP if oaep else RsaPadding.PKCS1V15)
    assert await open_envelope(env, ra.soft) == payload


async def test_openssl_decrypts_our_oaep_envelope(tmp_path: Path, ra: Party) -> None:
    cert, key = write_party(tmp_path, ra, "ra")
    env = tmp_path / "env.der"
    env.write_bytes(
        build_envelope(b"hello scep", ra.cert, cipher=ContentCipher.AES128_CBC, rsa_padding=RsaPadding.OAEP)
    )
    out = openssl(
        "cms", "-decrypt", "-inform", "DER", "-binary", "-in", str(env), "-inkey", str(key), "-recip", str(cert)
    )
    assert out == b"hello scep"
