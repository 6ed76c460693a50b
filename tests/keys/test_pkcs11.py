"""PKCS#11 keys on the session's SoftHSM2 token (tests/support/softhsm.py)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, ObjectClass

from scepd.keys.base import Decrypter, HashName, KeyBackendError, OaepParams, RsaPadding, Signer
from scepd.keys.pkcs11.config import TokenConfig
from scepd.keys.pkcs11.pool import (
    TokenPool,
    find_public_key,
    generate_key,
    key_exists,
    load_certificate,
    store_certificate,
    token_thread,
)
from scepd.keys.pkcs11.session import TokenSession
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
    for name, kind, kw in [
        ("rsa", "rsa", {"size": 2048, "decrypt": True}),
        ("p256", "ec", {"curve": "P-256"}),
        ("p384", "ec", {"curve": "P-384"}),
    ]:
        label = unique(f"t-{name}")
        out[name] = (label, generate_key(cfg, label, kind, **kw))
    return out


def private_attributes(cfg: TokenConfig, label: str) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        s = TokenSession(cfg)
        try:
            key = s.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            pub = s.session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
            return {
                a: key[a]
                for a in (
                    Attribute.TOKEN,
                    Attribute.PRIVATE,
                    Attribute.SENSITIVE,
                    Attribute.EXTRACTABLE,
                    Attribute.SIGN,
                    Attribute.ID,
                )
            } | {"pub_id": pub[Attribute.ID]}
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
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(priv.public_key())
        .serial_number(12345)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(priv, hashes.SHA256())
    )
    der = cert.public_bytes(
        encoding=__import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER
    )
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


OAEPS = [
    OaepParams(),
    OaepParams(HashName.SHA256, HashName.SHA256),
    OaepParams(HashName.SHA256, HashName.SHA1),
    OaepParams(HashName.SHA1, HashName.SHA1, b"label"),
]


def oaep(p: OaepParams) -> padding.OAEP:
    return padding.OAEP(padding.MGF1(HASHES[p.mgf_hash]), HASHES[p.hash], p.label or None)


def decrypt_only_key(cfg: TokenConfig, label: str) -> rsa.RSAPublicKey:
    """An RSA key that can only decrypt (CKA_SIGN false): the one kind raw RSA is allowed on."""
    from pkcs11 import KeyType

    def make() -> bytes:
        s = TokenSession(cfg)
        try:
            s.session.generate_keypair(
                KeyType.RSA,
                2048,
                label=label,
                id=os.urandom(16),
                store=True,
                public_template={Attribute.TOKEN: True, Attribute.ENCRYPT: True, Attribute.VERIFY: False},
                private_template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.DECRYPT: True,
                    Attribute.SIGN: False,
                },
            )
            der = s.public_key_der(label)
            assert der is not None
            return der
        finally:
            s.close()

    from cryptography.hazmat.primitives.serialization import load_der_public_key

    pub = load_der_public_key(token_thread(cfg.module).submit(make).result())
    assert isinstance(pub, rsa.RSAPublicKey)
    return pub


def bad_blocks(pub: rsa.RSAPublicKey, cek: bytes) -> dict[str, bytes]:
    """RSA blocks that do not unwrap to `cek`, built with raw RSA so the outcome is certain.
    (An OAEP ciphertext or a wrong key's block parses as v1.5 about once in 400 or 10^5 tries.)"""
    k = pub.key_size // 8
    return {
        "type 1 block": raw_rsa(pub, b"\0\x01" + b"\xff" * (k - 3 - len(cek)) + b"\0" + cek),
        "no separator": raw_rsa(pub, b"\0\x02" + b"\x11" * (k - 2)),
        "short padding": raw_rsa(pub, b"\0\x02" + b"\x11" * 5 + b"\0" + os.urandom(k - 8)),
        "leading byte": raw_rsa(pub, b"\x01\x02" + b"\x11" * (k - 3 - len(cek)) + b"\0" + cek),
        "5-byte key": pub.encrypt(cek[:5], padding.PKCS1v15()),
        "64-byte key": pub.encrypt(os.urandom(64), padding.PKCS1v15()),
        "zeros": b"\0" * k,
        "short": b"short",
        "random": os.urandom(k),
    }


@pytest.mark.parametrize("workers", [0, 1])
async def test_unwrap_implicit_rejection(
    token_config: Callable[..., TokenConfig], keys: dict[str, Any], workers: int
) -> None:
    label, pub = keys["rsa"]
    async with TokenPool.open(token_config(workers)) as pool:
        key = pool.key(label)
        assert key.can_sign and key.can_decrypt
        cek = os.urandom(32)
        good = await key.unwrap(pub.encrypt(cek, padding.PKCS1v15()), RsaPadding.PKCS1V15, None, 32)
        assert (good.key, good.genuine, good.detail) == (cek, True, "ok")
        sha1 = await key.unwrap(pub.encrypt(cek, oaep(OaepParams())), RsaPadding.OAEP, OaepParams(), 32)
        assert (sha1.key, sha1.genuine) == (cek, True)
        seen = {cek}
        for name, block in bad_blocks(pub, cek).items():
            for size in (16, 24, 32):
                first = await key.unwrap(block, RsaPadding.PKCS1V15, None, size)
                again = await key.unwrap(block, RsaPadding.PKCS1V15, None, size)
                assert not first.genuine, name
                assert len(first.key) == size and first.key == again.key, name  # the same request, the same key
                assert first.key not in seen, name
                seen.add(first.key)
        # OAEP blocks that do not decode: a wrong key's ciphertext, random bytes, a v1.5 block.
        other = rsa.generate_private_key(65537, 2048).public_key()
        for block in (other.encrypt(cek, oaep(OaepParams())), os.urandom(256), pub.encrypt(cek, padding.PKCS1v15())):
            got = await key.unwrap(block, RsaPadding.OAEP, OaepParams(), 32)
            assert not got.genuine and len(got.key) == 32 and got.key != cek
        # ... and the key still works afterwards.
        again = await key.unwrap(pub.encrypt(cek, padding.PKCS1v15()), RsaPadding.PKCS1V15, None, 16)
        assert again.genuine is False and again.detail == "content key length"  # a 32-byte key where 16 are due


async def test_unwrap_refuses_raw_rsa_on_a_key_that_signs(
    token_config: Callable[..., TokenConfig], keys: dict[str, Any]
) -> None:
    """OAEP parameters SoftHSM2 cannot do (SHA-2, a label) would need raw RSA: refused on a signing key."""
    from scepd.keys.base import UnsupportedParameters

    label, pub = keys["rsa"]
    cek = os.urandom(16)
    async with TokenPool.open(token_config()) as pool:
        for p in OAEPS[1:]:
            for block in (pub.encrypt(cek, oaep(p)), os.urandom(256)):  # the answer cannot depend on the block
                with pytest.raises(UnsupportedParameters):
                    await pool.key(label).unwrap(block, RsaPadding.OAEP, p, 16)
        with pytest.raises(UnsupportedParameters):
            await pool.key(keys["p256"][0]).unwrap(b"x" * 64, RsaPadding.PKCS1V15, None, 16)
        with pytest.raises(KeyBackendError):
            pool.key("no-such-key")


async def test_unwrap_raw_oaep_on_a_decrypt_only_key(token_config: Callable[..., TokenConfig]) -> None:
    cfg = token_config()
    label = unique("envelope-only")
    pub = decrypt_only_key(cfg, label)
    cek = os.urandom(24)
    async with TokenPool.open(cfg) as pool:
        key = pool.key(label)
        assert not key.can_sign and key.can_decrypt
        for p in OAEPS:
            got = await key.unwrap(pub.encrypt(cek, oaep(p)), RsaPadding.OAEP, p, 24)
            assert (got.key, got.genuine) == (cek, True), p
            for bad in (
                pub.encrypt(cek, oaep(OAEPS[(OAEPS.index(p) + 1) % len(OAEPS)])),
                os.urandom(256),
                pub.encrypt(cek[:5], oaep(p)),
                b"\0" * 256,
            ):
                rejected = await key.unwrap(bad, RsaPadding.OAEP, p, 24)
                assert not rejected.genuine and len(rejected.key) == 24 and rejected.key != cek, p


async def test_rejection_secret_on_the_token(token_config: Callable[..., TokenConfig], keys: dict[str, Any]) -> None:
    """Without a stored secret each worker makes its own; with one, every worker derives the same key."""
    from scepd.keys.pkcs11.pool import ensure_reject_secret

    cfg = token_config()
    label = unique("ra")
    pub = generate_key(cfg, label, "rsa", size=2048, decrypt=True)
    block = pub.encrypt(os.urandom(7), padding.PKCS1v15())

    async def substitute(workers: int) -> bytes:
        async with TokenPool.open(token_config(workers)) as pool:
            return (await pool.key(label).unwrap(block, RsaPadding.PKCS1V15, None, 16)).key

    async with TokenPool.open(cfg) as pool:
        assert not await pool.key(label).has_reject_secret()
    assert await substitute(0) != await substitute(1)  # session-only secrets differ
    assert ensure_reject_secret(cfg, label) is True
    assert ensure_reject_secret(cfg, label) is False
    async with TokenPool.open(cfg) as pool:
        assert await pool.key(label).has_reject_secret()
    assert await substitute(0) == await substitute(1) == await substitute(0)

    def secret_attributes() -> dict[Any, Any]:
        s = TokenSession(cfg)
        try:
            obj = s.session.get_key(object_class=ObjectClass.SECRET_KEY, label=label + ".reject")
            return {
                a: obj[a]
                for a in (
                    Attribute.SENSITIVE,
                    Attribute.EXTRACTABLE,
                    Attribute.SIGN,
                    Attribute.DECRYPT,
                    Attribute.TOKEN,
                )
            }
        finally:
            s.close()

    assert token_thread(cfg.module).submit(secret_attributes).result() == {
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.TOKEN: True,
    }


async def test_metrics(token_config: Callable[..., TokenConfig], keys: dict[str, Any]) -> None:
    label, pub = keys["rsa"]

    def count(op: str, mech: str, result: str) -> float:
        for metric in KEY_OPERATION_SECONDS.collect():
            for s in metric.samples:
                if s.name.endswith("_count") and s.labels == {
                    "key": label,
                    "operation": op,
                    "mechanism": mech,
                    "result": result,
                }:
                    return s.value
        return 0.0

    before = (
        count("sign", "SHA256_RSA_PKCS", "ok"),
        count("unwrap", "RSA_PKCS", "rejected"),
        count("unwrap", "RSA_PKCS", "error"),
        count("unwrap", "RSA_PKCS", "ok"),
    )
    async with TokenPool.open(token_config()) as pool:
        await pool.key(label).sign(b"x", HashName.SHA256)
        await pool.key(label).unwrap(b"\x00" * 256, RsaPadding.PKCS1V15, None, 16)
        await pool.key(label).unwrap(pub.encrypt(b"k" * 16, padding.PKCS1v15()), RsaPadding.PKCS1V15, None, 16)
    assert count("sign", "SHA256_RSA_PKCS", "ok") == before[0] + 1
    # A ciphertext that is not for this key is the client's fault (or a probe), not the token's.
    assert count("unwrap", "RSA_PKCS", "rejected") == before[1] + 1
    assert count("unwrap", "RSA_PKCS", "error") == before[2]
    assert count("unwrap", "RSA_PKCS", "ok") == before[3] + 1


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


def test_config_repr_hides_pin() -> None:
    cfg = TokenConfig("/m.so", "scepd", "s3cret-pin", 2, None)
    assert "s3cret-pin" not in repr(cfg) and "s3cret-pin" not in str(cfg)


@pytest.mark.parametrize("workers", [0, 2])
async def test_stress(token_config: Callable[..., TokenConfig], keys: dict[str, Any], workers: int) -> None:
    """2400 mixed operations from 200 concurrent tasks, 12 each (all four kinds three times); every result is
    checked. Thousands, as the docs promise: the suite runs in two workers, so this costs little wall time."""
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
                        cek = data[:32]
                        got = await rsa_key.unwrap(rsa_pub.encrypt(cek, oaep(OaepParams())), RsaPadding.OAEP, None, 32)
                        assert got.genuine and got.key == cek
                    case 3:
                        cek = data[:16]
                        ct = rsa_pub.encrypt(cek, padding.PKCS1v15())
                        assert (await rsa_key.unwrap(ct, RsaPadding.PKCS1V15, None, 16)).key == cek
                max_busy = max(max_busy, pool.busy)
                done += 1

        with trio.fail_after(50):
            async with trio.open_nursery() as nursery:
                for n in range(200):
                    nursery.start_soon(client, n)
        assert pool.busy == 0
        # Sampled between one task's operations, when its own call is done: every other worker was seen busy at
        # once (the load kept all of them in use), and the count never ran past them. The token thread takes
        # THREAD_DEPTH calls at once, so it can still be busy with another task's call when this one's is done.
        expected = pool.size if workers == 0 else pool.size - 1
        assert max_busy == expected, (max_busy, pool.size)
    assert done == 2400


async def test_the_token_thread_is_handed_the_next_call_before_it_finishes_one(
    token_config: Callable[..., TokenConfig], keys: dict[str, Any]
) -> None:
    """While the thread works on one call the next is already queued at it, so it never waits for the
    event loop between calls; the calls past THREAD_DEPTH wait in the pool, where a timeout can drop them."""
    cfg = token_config(0)
    async with TokenPool.open(cfg) as pool:
        release = threading.Event()
        blocker = token_thread(cfg.module).submit(release.wait, 10)  # the thread is busy until released
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(TokenPool.THREAD_DEPTH + 2):
                    nursery.start_soon(pool.ping)
                await trio.testing.wait_all_tasks_blocked()
                assert pool._idle_recv.statistics().tasks_waiting_receive == 2
                assert pool.busy == 1  # one worker, however many calls it holds
                release.set()
        finally:
            release.set()
            blocker.result(10)
        assert pool.busy == 0


async def test_ready_skips_the_ping_only_right_after_a_success(
    token_config: Callable[..., TokenConfig], keys: dict[str, Any]
) -> None:
    """/readyz's token probe does not queue a ping behind busy token calls when one just answered; it
    pings again once that success is older than RECENT_OK, and at once after a token fault."""
    label, _ = keys["rsa"]
    async with TokenPool.open(token_config()) as pool:
        pool.RECENT_OK = 0.3
        calls: list[str] = []
        real_call = pool.call

        async def counting(op: str, *args: Any, **kw: Any) -> tuple[str, Any]:
            calls.append(op)
            return await real_call(op, *args, **kw)

        pool.call = counting  # type: ignore[method-assign]
        await pool.ready()  # nothing has answered yet: a real ping
        assert calls == ["ping"]
        await pool.key(label).sign(b"x", HashName.SHA256)
        await pool.ready()
        assert calls == ["ping", "sign"]  # the sign just answered
        await trio.sleep(0.35)
        await pool.ready()
        assert calls == ["ping", "sign", "ping"]  # too old: asked again
        status, _ = await pool.call("sign", "no-such-label", "SHA256_RSA_PKCS", b"x")
        assert status == "backend"
        await pool.ready()
        assert calls[-1] == "ping" and len(calls) == 5  # a fault right after the ping's success
