"""No decryption oracle over HTTP: every envelope that does not open gets the same answer.

The RSA key-transport blocks are built by hand (raw RSA with the RA's public
key), so each shape is certain: a broken PKCS#1 v1.5 header, a valid block
carrying a content key of the wrong length, a valid block carrying a key that
does not decrypt the content, their OAEP counterparts, and a correct envelope
whose payload is not DER. A stranger must not be able to tell them apart.
"""

from __future__ import annotations

import os
import secrets

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from scepd import der, oids
from scepd.keys.base import HashName, RsaPadding
from scepd.keys.software import SoftwareKey
from scepd.scep import UNREADABLE_TEXT, ContentCipher
from scepd.scep.client import draft_signed_data, make_self_signed
from scepd.scep.constants import FailInfo, MessageType, PkiStatus
from scepd.scep.envelope import build_envelope
from scepd.scep.signed import attribute_der
from tests.e2e.conftest import CHALLENGE
from tests.support.scep_client import Client, make_csr, rsa_key

CIPHER = ContentCipher.AES128_CBC
OAEP_SHA1 = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)


def raw_rsa(pub: rsa.RSAPublicKey, em: bytes) -> bytes:
    n, e = pub.public_numbers().n, pub.public_numbers().e
    return pow(int.from_bytes(em, "big"), e, n).to_bytes(pub.key_size // 8, "big")


def request(
    client: Client, key: rsa.RSAPrivateKey, payload: bytes, block: bytes, cek: bytes, rsa_padding: RsaPadding
) -> bytes:
    """A signed PKCSReq whose envelope carries `block` as its key transport and `payload` under `cek`."""
    info = cms.ContentInfo.load(build_envelope(b"x", client.recipient, cipher=CIPHER, rsa_padding=rsa_padding))
    enveloped = info["content"]
    enveloped["recipient_infos"][0].chosen["encrypted_key"] = block
    iv = os.urandom(16)
    eci = enveloped["encrypted_content_info"]
    eci["content_encryption_algorithm"] = {"algorithm": CIPHER.asn1_name, "parameters": iv}
    eci["encrypted_content"] = CIPHER.encrypt(cek, iv, payload)
    csr = make_csr(key, "probe", CHALLENGE)
    import datetime as dt

    signer = make_self_signed(key, csr.subject, dt.datetime.now(dt.UTC))
    draft = draft_signed_data(
        content=info.dump(force=True),
        attributes=[
            attribute_der(oids.SCEP_MESSAGE_TYPE, der.printable_string(MessageType.PKCS_REQ.value)),
            attribute_der(oids.SCEP_TRANSACTION_ID, der.printable_string(secrets.token_hex(16))),
            attribute_der(oids.SCEP_SENDER_NONCE, der.octet_string(os.urandom(16))),
        ],
        signer_certificate=signer,
        digest_name=HashName.SHA256,
        certificates=(),
    )
    return draft.finish(SoftwareKey(key).sign_now(draft.to_be_signed, HashName.SHA256))


def shapes(pub: rsa.RSAPublicKey, csr_der: bytes) -> dict[str, tuple[bytes, bytes, bytes, RsaPadding]]:
    """name -> (payload, key-transport block, content key, padding); only "good" is readable."""
    k = pub.key_size // 8
    cek, other = os.urandom(16), os.urandom(16)
    v15, oaep = RsaPadding.PKCS1V15, RsaPadding.OAEP
    return {
        "good": (csr_der, pub.encrypt(cek, padding.PKCS1v15()), cek, v15),
        "v1.5 broken header": (csr_der, raw_rsa(pub, b"\0\x01" + b"\xff" * (k - 19) + b"\0" + cek), cek, v15),
        "v1.5 no separator": (csr_der, raw_rsa(pub, b"\0\x02" + b"\x11" * (k - 2)), cek, v15),
        "v1.5 5-byte key": (csr_der, pub.encrypt(cek[:5], padding.PKCS1v15()), cek, v15),
        "v1.5 wrong key of the right length": (csr_der, pub.encrypt(other, padding.PKCS1v15()), cek, v15),
        "oaep random block": (csr_der, os.urandom(k), cek, oaep),
        "oaep 5-byte key": (csr_der, pub.encrypt(cek[:5], OAEP_SHA1), cek, oaep),
        "oaep wrong key of the right length": (csr_der, pub.encrypt(other, OAEP_SHA1), cek, oaep),
        "payload not DER": (b"this is not a PKCS#10 request", pub.encrypt(cek, padding.PKCS1v15()), cek, v15),
        "payload not signed by its key": (csr_der[:-8] + os.urandom(8), pub.encrypt(cek, padding.PKCS1v15()), cek, v15),
    }


async def test_every_unreadable_envelope_gets_one_answer(client: Client) -> None:
    pub = client.recipient.public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    key = rsa_key()
    csr_der = make_csr(key, "probe", CHALLENGE).public_bytes(Encoding.DER)
    answers = {}
    for name, (payload, block, cek, rsa_padding) in shapes(pub, csr_der).items():
        for _attempt in range(2):  # the same request behaves the same
            r = await client.post(request(client, key, payload, block, cek, rsa_padding))
            assert r.status_code == 200, (name, r.status_code, r.text)
            from scepd.scep.client import parse_cert_rep

            rep = parse_cert_rep(r.content, decrypt_key=key, trusted_signers=client.ca_certs)
            answers.setdefault(name, set()).add((r.status_code, rep.status, rep.fail_info, rep.fail_info_text))
    good = answers.pop("good")
    assert {a[1] for a in good} == {PkiStatus.SUCCESS}
    assert all(len(a) == 1 for a in answers.values()), answers
    assert set().union(*answers.values()) == {(200, PkiStatus.FAILURE, FailInfo.BAD_MESSAGE_CHECK, UNREADABLE_TEXT)}


@pytest.mark.parametrize("cipher_text", ["AES128_CBC needs", "padding", "decrypt with our key", "PKCS#10"])
async def test_no_cipher_detail_reaches_the_reply(client: Client, cipher_text: str) -> None:
    """The texts the daemon used to send (and that told the shapes apart) are gone from every answer."""
    pub = client.recipient.public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    key = rsa_key()
    csr_der = make_csr(key, "probe", CHALLENGE).public_bytes(Encoding.DER)
    payload, block, cek, rsa_padding = shapes(pub, csr_der)["v1.5 5-byte key"]
    r = await client.post(request(client, key, payload, block, cek, rsa_padding))
    assert cipher_text.encode() not in r.content
