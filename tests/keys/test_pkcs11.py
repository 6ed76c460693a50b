"""PKCS#11 keys on the session's SoftHSM2 token (tests/softhsm.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, ObjectClass

from scepd.keys.base import DecryptionError, Decrypter, HashName, KeyBackendError, OaepParams, RsaPadding, Signer
from scepd.keys.pkcs11 import (
    TokenConfig, TokenPool, find_public_key, generate_key, key_exists, load_certificate, read_pin,
    store_certificate, token_thread,
)
from scepd.keys.pkcs11_worker import TokenSession
from scepd.metrics import KEY_OPERATION_SECONDS

ALL_HASHES = list(HashName)
HASHES = {h: getattr(hashes, h.name)() for h in HashName}


def raw_rsa(pub: rsa.RSAPublicKey, em: bytes) -> bytes:
    """Encrypt an encoded block exactly as given, to test padding checks with a known plaintext."""
    n, e = pub.public_numbers().n, pub.public_numbers().e
    return pow(int.from_bytes(em, "big"), e, n).to_bytes(pub.key_size // 8, "big")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def keys(token_config: Callable[..., TokenConfig]) -> dict[str, Any]:
    cfg = token_config()
    out = {}
    for name, kind, kw in [("rsa", "rsa", {"size": 2048, "decrypt": True}), ("p256", "ec", {"curve": "P-256"}),
                           ("p384", "ec", {"curve": "P-384"})]:
        label = unique(f"t-{name}")
        out[name] = (label, generate_key(cfg, label, kind, **kw))
    return out


def private_attributes(cfg: TokenConfig, label: str) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        s = TokenSession(cfg)
        try:
            key = s.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            pub = s.session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
            return {a: key[a] for a in (Attribute.TOKEN, Attribute.PRIVATE, Attribute.SENSITIVE,
                                        Attribute.EXTRACTABLE, Attribute.SIGN, Attribute.ID)} | {"pub_id": pub[Attribute.ID]}
        finally:
            s.close()

    return token_thread(cfg.module).submit(read).result()


@pytest.mark.parametrize("kind,kw", [("rsa", {"size": 3072}), ("ec", {"curve": "P-256"}), ("ec", {"curve": "P-384"})])
def test_generate_on_token(token_config: Callable[..., TokenConfig], kind: str, kw: dict[str, Any]) -> None:
    cfg = token_config()
    label = unique("gen")
    assert not key_exists(cfg, label)
    pub = generate_key(cfg, label, kind, **kw)
    assert isinstance(pub, rsa.RSAPublicKey if kind == "rsa" else ec.EllipticCurvePublicKey)
    if kind == "rsa":
        assert pub.key_size == 3072
    else:
        assert pub.curve.name == {"P-256": "secp256r1", "P-384": "secp384r1"}[kw["curve"]]
    assert key_exists(cfg, label)
    assert find_public_key(cfg, label) == pub
    attrs = private_attributes(cfg, label)
    assert attrs[Attribute.TOKEN] is True
    assert attrs[Attribute.PRIVATE] is True
    assert attrs[Attribute.SENSITIVE] is True
    assert attrs[Attribute.EXTRACTABLE] is False
    assert attrs[Attribute.SIGN] is True
    assert attrs[Attribute.ID] == attrs["pub_id"] and len(attrs[Attribute.ID]) == 16
    with pytest.raises(FileExistsError):
        generate_key(cfg, label, kind, **kw)


def test_generate_rejects_bad_sizes(token_config: Callable[..., TokenConfig]) -> None:
    with pytest.raises(ValueError):
        generate_key(token_config(), unique("bad"), "rsa", size=1024)
    with pytest.raises(ValueError):
        generate_key(token_config(), unique("bad"), "ec", curve="P-521")
    assert find_public_key(token_config(), "no-such-key") is None


def test_certificate_on_token(token_config: Callable[..., TokenConfig], keys: dict[str, Any]) -> None:
    import datetime as dt

    cfg = token_config()
    label, _ = keys["p256"]
    priv = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=test")
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(priv.public_key())
            .serial_number(12345).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(priv, hashes.SHA256()))
    der = cert.public_bytes(encoding=__import__("cryptography.hazmat.primitives.serialization",
                                                fromlist=["Encoding"]).Encoding.DER)
    assert load_certificate(cfg, label) is None
    store_certificate(cfg, label, der)
    store_certificate(cfg, label, der)  # replaces
    assert load_certificate(cfg, label) == der


@pytest.mark.parametrize("workers", [0, 1])
async def test_sign_every_hash(token_config: Callable[..., TokenConfig], keys: dict[str, Any], workers: int) -> None:
    async with TokenPool.open(token_config(workers)) as pool:
        assert pool.size == max(workers, 1) and pool.busy == 0
        await pool.ping()
        for name, (label, pub) in keys.items():
            key = pool.key(label)
            assert isinstance(key, Signer) and isinstance(key, Decrypter)
            assert key.label == label and key.public_key == pub
            for h in ALL_HASHES:
                data = os.urandom(300)
                sig = await key.sign(data, h)
                if name == "rsa":
                    pub.verify(sig, data, padding.PKCS1v15(), HASHES[h])
                else:
                    pub.verify(sig, data, ec.ECDSA(HASHES[h]))


OAEPS = [OaepParams(), OaepParams(HashName.SHA256, HashName.SHA256),
         OaepParams(HashName.SHA256, HashName.SHA1), OaepParams(HashName.SHA1, HashName.SHA1, b"label")]


def oaep(p: OaepParams) -> padding.OAEP:
    return padding.OAEP(padding.MGF1(HASHES[p.mgf_hash]), HASHES[p.hash], p.label or None)


@pytest.mark.parametrize("workers", [0, 1])
async def test_decrypt(token_config: Callable[..., TokenConfig], keys: dict[str, Any], workers: int) -> None:
    label, pub = keys["rsa"]
    async with TokenPool.open(token_config(workers)) as pool:
        key = pool.key(label)
        cek = os.urandom(32)
        assert await key.decrypt(pub.encrypt(cek, padding.PKCS1v15()), RsaPadding.PKCS1V15) == cek
        for p in OAEPS:
            assert await key.decrypt(pub.encrypt(cek, oaep(p)), RsaPadding.OAEP, p) == cek, p
        assert await key.decrypt(pub.encrypt(cek, oaep(OaepParams())), RsaPadding.OAEP) == cek
        # Wrong ciphertexts: the client's fault, not the token's.
        other = rsa.generate_private_key(65537, 2048).public_key()
        for p in OAEPS:
            for bad in (other.encrypt(cek, oaep(p)), os.urandom(256), b"\x00" * 256, b"short"):
                with pytest.raises(DecryptionError):
                    await key.decrypt(bad, RsaPadding.OAEP, p)
        with pytest.raises(DecryptionError):
            await key.decrypt(pub.encrypt(cek, oaep(OAEPS[1])), RsaPadding.OAEP, OAEPS[0])
        # Blocks that decrypt but are not PKCS#1 v1.5 type 2, built with raw RSA so the outcome is certain.
        # (An OAEP ciphertext or a wrong key's block happens to parse as v1.5 about once in 400 or 10^5 tries.)
        k = pub.key_size // 8
        for em in (b"\0\x01" + b"\xff" * (k - 35) + b"\0" + cek,      # signature block type 1
                   b"\0\x02" + b"\x11" * (k - 2),                     # no zero separator
                   b"\0\x02" + b"\x11" * 5 + b"\0" + os.urandom(k - 8),  # fewer than 8 padding bytes
                   b"\x01\x02" + b"\x11" * (k - 35) + b"\0" + cek):     # leading byte not zero
            with pytest.raises(DecryptionError):
                await key.decrypt(raw_rsa(pub, em), RsaPadding.PKCS1V15)
        with pytest.raises(DecryptionError):
            await key.decrypt(b"short", RsaPadding.PKCS1V15)
        # ... and the key still works afterwards.
        assert await key.decrypt(pub.encrypt(cek, padding.PKCS1v15()), RsaPadding.PKCS1V15) == cek
        with pytest.raises(KeyBackendError):
            await pool.key(keys["p256"][0]).decrypt(b"x" * 64, RsaPadding.PKCS1V15)
        with pytest.raises(KeyBackendError):
            pool.key("no-such-key")


async def test_metrics(token_config: Callable[..., TokenConfig], keys: dict[str, Any]) -> None:
    label, pub = keys["rsa"]

    def count(op: str, mech: str, result: str) -> float:
        for metric in KEY_OPERATION_SECONDS.collect():
            for s in metric.samples:
                if s.name.endswith("_count") and s.labels == {"key": label, "operation": op,
                                                              "mechanism": mech, "result": result}:
                    return s.value
        return 0.0

    before = (count("sign", "SHA256_RSA_PKCS", "ok"), count("decrypt", "RSA_PKCS", "undecryptable"),
              count("decrypt", "RSA_PKCS", "error"))
    async with TokenPool.open(token_config()) as pool:
        await pool.key(label).sign(b"x", HashName.SHA256)
        with pytest.raises(DecryptionError):
            await pool.key(label).decrypt(b"\x00" * 256, RsaPadding.PKCS1V15)
    assert count("sign", "SHA256_RSA_PKCS", "ok") == before[0] + 1
    # A ciphertext that is not for this key is the client's fault, not the token's.
    assert count("decrypt", "RSA_PKCS", "undecryptable") == before[1] + 1
    assert count("decrypt", "RSA_PKCS", "error") == before[2]


async def test_wrong_pin(token_config: Callable[..., TokenConfig]) -> None:
    from dataclasses import replace

    with pytest.raises(KeyBackendError, match="Pin"):
        async with TokenPool.open(replace(token_config(1), pin="wrong-pin")):
            pass  # pragma: no cover


async def test_worker_restarts_after_crash(token_config: Callable[..., TokenConfig], keys: dict[str, Any]) -> None:
    label, pub = keys["rsa"]
    async with TokenPool.open(token_config(1)) as pool:
        worker = pool._workers[0]
        worker._proc.kill()
        with pytest.raises(KeyBackendError):
            await pool.key(label).sign(b"x", HashName.SHA256)
        sig = await pool.key(label).sign(b"x", HashName.SHA256)  # a fresh worker process
        pub.verify(sig, b"x", padding.PKCS1v15(), hashes.SHA256())


def test_read_pin(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pin").write_text("1234\n")
    assert read_pin(f"file:{tmp_path / 'pin'}") == "1234"
    monkeypatch.setenv("SCEPD_TEST_PIN", "5678")
    assert read_pin("env:SCEPD_TEST_PIN") == "5678"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_pin("credential:pin") == "1234"
    for bad in ("1234", "file:", "credential:../pin", "env:SCEPD_NO_SUCH_VAR"):
        with pytest.raises(ValueError):
            read_pin(bad)


def test_config_repr_hides_pin() -> None:
    cfg = TokenConfig("/m.so", "scepd", "s3cret-pin", 2, None)
    assert "s3cret-pin" not in repr(cfg) and "s3cret-pin" not in str(cfg)


@pytest.mark.parametrize("workers", [0, 2])
async def test_stress(token_config: Callable[..., TokenConfig], keys: dict[str, Any], workers: int) -> None:
    """2400 mixed operations from 200 concurrent tasks; every result is checked."""
    rsa_label, rsa_pub = keys["rsa"]
    ec_label, ec_pub = keys["p256"]
    done = 0
    async with TokenPool.open(token_config(workers)) as pool:
        rsa_key, ec_key = pool.key(rsa_label), pool.key(ec_label)
        max_busy = 0

        async def client(n: int) -> None:
            nonlocal done, max_busy
            for i in range(12):
                data = os.urandom(64) + n.to_bytes(2, "big")
                h = ALL_HASHES[(n + i) % len(ALL_HASHES)]
                match i % 4:
                    case 0:
                        rsa_pub.verify(await rsa_key.sign(data, h), data, padding.PKCS1v15(), HASHES[h])
                    case 1:
                        ec_pub.verify(await ec_key.sign(data, h), data, ec.ECDSA(HASHES[h]))
                    case 2:
                        p = OAEPS[(n + i) % len(OAEPS)]
                        assert await rsa_key.decrypt(rsa_pub.encrypt(data, oaep(p)), RsaPadding.OAEP, p) == data
                    case 3:
                        ct = rsa_pub.encrypt(data, padding.PKCS1v15())
                        assert await rsa_key.decrypt(ct, RsaPadding.PKCS1V15) == data
                max_busy = max(max_busy, pool.busy)
                done += 1

        with trio.fail_after(50):
            async with trio.open_nursery() as nursery:
                for n in range(200):
                    nursery.start_soon(client, n)
        assert pool.busy == 0
    assert done == 2400
