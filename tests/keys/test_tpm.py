"""Keys in a TPM 2.0 through tpm2-pkcs11, on the session's software TPM (tests/support/tpm.py).

Skipped only where swtpm is not installed; CI installs it (scripts/install.sh).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, Mechanism, ObjectClass

from scepd.keys.base import HashName, KeyBackendError, OaepParams, RsaPadding, UnsupportedParameters
from scepd.keys.pkcs11.pool import TokenPool, generate_key, key_exists, token_thread
from scepd.keys.pkcs11.session import TokenSession
from scepd.keys.tpm import TpmUnsupported
from tests.support.tpm import TpmToken, requires_swtpm

pytestmark = requires_swtpm


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def tpm_keys(tpm_token: TpmToken) -> dict[str, tuple[str, Any]]:
    """A sign-only CA key, an RA key that opens envelopes, and sign-only EC keys, made on the TPM.

    The CA key is RSA-2048 here: swtpm takes 5-10 s to find an RSA-3072 key, and the size makes no difference
    to what these tests check. The RSA-3072 CA of `scepd init --token tpm` is made and used in
    tests/e2e/test_tpm.py."""
    cfg = tpm_token.config()
    out = {}
    for name, kind, kw in [
        ("ca", "rsa", {"size": 2048}),
        ("ra", "rsa", {"size": 2048, "decrypt": True}),
        ("p256", "ec", {"curve": "P-256"}),
        ("p384", "ec", {"curve": "P-384"}),
    ]:
        label = unique(f"tpm-{name}")
        out[name] = (label, generate_key(cfg, label, kind, **kw))
    return out


def on_token(token: TpmToken, work: Any) -> Any:
    def run() -> Any:
        s = TokenSession(token.config())
        try:
            return work(s)
        finally:
            s.close()

    return token_thread(token.config().module).submit(run).result()


def attributes(token: TpmToken, label: str) -> dict[Any, Any]:
    def read(s: TokenSession) -> dict[Any, Any]:
        key = s.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        wanted = (Attribute.SIGN, Attribute.DECRYPT, Attribute.UNWRAP, Attribute.SENSITIVE, Attribute.EXTRACTABLE)
        wanted += (Attribute.ALWAYS_SENSITIVE, Attribute.NEVER_EXTRACTABLE)
        return {a: key[a] for a in wanted}

    return on_token(token, read)  # type: ignore[no-any-return]


def test_keys_on_the_tpm_are_sensitive_and_only_the_ra_decrypts(
    tpm_token: TpmToken, tpm_keys: dict[str, tuple[str, Any]]
) -> None:
    for name, (label, _) in tpm_keys.items():
        attrs = attributes(tpm_token, label)
        assert attrs[Attribute.SIGN] is True, name
        assert attrs[Attribute.DECRYPT] is (name == "ra"), name
        assert attrs[Attribute.UNWRAP] is (name == "ra"), name
        assert attrs[Attribute.SENSITIVE] is True and attrs[Attribute.ALWAYS_SENSITIVE] is True, name
        assert attrs[Attribute.EXTRACTABLE] is False and attrs[Attribute.NEVER_EXTRACTABLE] is True, name
    assert key_exists(tpm_token.config(), tpm_keys["ca"][0])


@pytest.fixture(scope="module")
def altered_key(tpm_token: TpmToken) -> tuple[str, Any]:
    """A sign-only RSA key whose database row the next two tests change (each a different attribute), so
    that the keys of `tpm_keys` keep theirs; one key for both, since each RSA key costs swtpm seconds."""
    label = unique("tpm-altered")
    return label, generate_key(tpm_token.config(), label, "rsa", size=2048)


def test_the_chip_refuses_to_decrypt_with_a_sign_only_key_even_when_the_database_says_it_may(
    tpm_token: TpmToken, altered_key: tuple[str, Any]
) -> None:
    """tpm2-pkcs11 lets CKA_DECRYPT be set true on a sign-only key (it is a database row), but the
    TPM object itself has no decrypt attribute, so the chip answers TPM_RC_ATTRIBUTES."""
    label, pub = altered_key
    ciphertext = pub.encrypt(b"k" * 16, padding.PKCS1v15())

    def try_decrypt(s: TokenSession) -> str:
        key = s.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        key[Attribute.DECRYPT] = True
        key = s.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        assert key[Attribute.DECRYPT] is True  # what the token reports is not what the chip allows
        try:
            key.decrypt(ciphertext, mechanism=Mechanism.RSA_PKCS)
        except Exception as e:  # noqa: BLE001 - the refusal is the point
            return type(e).__name__
        return "decrypted"

    assert on_token(tpm_token, try_decrypt) == "GeneralError"


def test_the_private_key_cannot_be_read_even_when_the_database_says_it_may(
    tpm_token: TpmToken, altered_key: tuple[str, Any]
) -> None:
    """tpm2-pkcs11 accepts CKA_SENSITIVE false and CKA_EXTRACTABLE true on a key (a database row), but
    the private key exists only wrapped by the TPM: its private exponent is not an attribute it has."""
    label, _ = altered_key

    def try_read(s: TokenSession) -> dict[str, object]:
        key = s.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        key[Attribute.SENSITIVE] = False
        key[Attribute.EXTRACTABLE] = True
        out: dict[str, object] = {"sensitive": key[Attribute.SENSITIVE], "extractable": key[Attribute.EXTRACTABLE]}
        for name, attr in (("d", Attribute.PRIVATE_EXPONENT), ("p", Attribute.PRIME_1)):
            try:
                out[name] = len(key[attr])
            except Exception as e:  # noqa: BLE001 - the refusal is the point
                out[name] = type(e).__name__
        return out

    got = on_token(tpm_token, try_read)
    assert got["sensitive"] is False and got["extractable"] is True  # what the token lets one change ...
    assert got["d"] == "AttributeTypeInvalid" and got["p"] == "AttributeTypeInvalid", got  # ... and what it has


def test_keys_the_tpm_cannot_hold_are_refused_before_anything_is_made(tpm_token: TpmToken) -> None:
    cfg = tpm_token.config()
    for kind, kw, text in [("rsa", {"size": 4096}, "RSA-4096"), ("ec", {"curve": "P-521"}, "P-521")]:
        label = unique("tpm-too-big")
        with pytest.raises(TpmUnsupported, match=text):
            generate_key(cfg, label, kind, **kw)
        assert not key_exists(cfg, label)


async def test_signatures_verify(tpm_token: TpmToken, tpm_keys: dict[str, tuple[str, Any]]) -> None:
    data = os.urandom(200)
    async with TokenPool.open(tpm_token.config()) as pool:
        for name, (label, pub) in tpm_keys.items():
            for h in (HashName.SHA256, HashName.SHA384):
                sig = await pool.key(label).sign(data, h)
                algo = getattr(hashes, h.name)()
                if isinstance(pub, rsa.RSAPublicKey):
                    pub.verify(sig, data, padding.PKCS1v15(), algo)
                else:
                    assert isinstance(pub, ec.EllipticCurvePublicKey), name
                    pub.verify(sig, data, ec.ECDSA(algo))


async def test_unwrap_gives_one_answer_and_a_failed_decrypt_does_not_poison_the_session(
    tpm_token: TpmToken, tpm_keys: dict[str, tuple[str, Any]]
) -> None:
    label, pub = tpm_keys["ra"]
    assert isinstance(pub, rsa.RSAPublicKey)
    cek = os.urandom(32)
    good_v15 = pub.encrypt(cek, padding.PKCS1v15())
    oaep256 = OaepParams(HashName.SHA256, HashName.SHA256)
    good_oaep = pub.encrypt(cek, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))
    bad = os.urandom(256)
    async with TokenPool.open(tpm_token.config()) as pool:
        key = pool.key(label)
        assert (await key.unwrap(good_v15, RsaPadding.PKCS1V15, None, 32)).key == cek
        first = await key.unwrap(bad, RsaPadding.PKCS1V15, None, 32)
        assert not first.genuine and len(first.key) == 32 and first.key != cek
        # The decrypt the bad block left open on the session was ended: the next good envelope opens ...
        again = await key.unwrap(good_v15, RsaPadding.PKCS1V15, None, 32)
        assert again.genuine and again.key == cek
        # ... and the same bad block gets the same substitute (the session's secret).
        assert (await key.unwrap(bad, RsaPadding.PKCS1V15, None, 32)).key == first.key
        assert (await key.unwrap(good_oaep, RsaPadding.OAEP, oaep256, 32)).key == cek
        bad_oaep = await key.unwrap(bad, RsaPadding.OAEP, oaep256, 32)
        assert not bad_oaep.genuine and len(bad_oaep.key) == 32
        assert (await key.unwrap(good_oaep, RsaPadding.OAEP, oaep256, 32)).key == cek


@pytest.mark.parametrize(
    "params",
    [OaepParams(HashName.SHA256, HashName.SHA256, b"label"), OaepParams(HashName.SHA256, HashName.SHA1)],
    ids=["label", "mgf-differs"],
)
async def test_oaep_the_tpm_gets_wrong_is_refused_not_raw_decrypted(
    tpm_token: TpmToken, tpm_keys: dict[str, tuple[str, Any]], params: OaepParams
) -> None:
    label, pub = tpm_keys["ra"]
    assert isinstance(pub, rsa.RSAPublicKey)
    block = pub.encrypt(
        b"k" * 16,
        padding.OAEP(padding.MGF1(getattr(hashes, params.mgf_hash.name)()), hashes.SHA256(), params.label or None),
    )
    async with TokenPool.open(tpm_token.config()) as pool:
        with pytest.raises(UnsupportedParameters):
            await pool.key(label).unwrap(block, RsaPadding.OAEP, params, 16)


@pytest.mark.parametrize("workers", [0, 2])
async def test_many_tasks_at_once_make_no_errors(
    tpm_token: TpmToken, tpm_keys: dict[str, tuple[str, Any]], workers: int
) -> None:
    """Signs and unwraps (good and bad blocks) from many Trio tasks at once: every answer right.

    workers=0 serialises the module on its one thread; it is what `scepd init --token tpm` writes, so it
    gets thousands of operations (2000 from 200 tasks, about 25 s on swtpm). workers=2 runs two processes,
    each with its own connection to the resource manager, and gets 80 from 40 tasks. Both must show zero
    errors (two threads on one module do not).
    """
    ra_label, ra_pub = tpm_keys["ra"]
    ec_label, ec_pub = tpm_keys["p256"]
    assert isinstance(ra_pub, rsa.RSAPublicKey) and isinstance(ec_pub, ec.EllipticCurvePublicKey)
    cek = os.urandom(16)
    good = ra_pub.encrypt(cek, padding.PKCS1v15())
    bad = os.urandom(256)
    ops, tasks = (2000, 200) if workers == 0 else (80, 40)
    results: list[str] = []
    async with TokenPool.open(replace(tpm_token.config(), workers=workers)) as pool:
        ra, signer = pool.key(ra_label), pool.key(ec_label)

        async def task(n: int) -> None:
            for i in range(n, ops, tasks):
                if i % 4 == 0:
                    u = await ra.unwrap(good if i % 8 == 0 else bad, RsaPadding.PKCS1V15, None, 16)
                    results.append("ok" if (u.genuine and u.key == cek) or (i % 8 and not u.genuine) else "wrong")
                else:
                    data = i.to_bytes(4, "big")
                    ec_pub.verify(await signer.sign(data, HashName.SHA256), data, ec.ECDSA(hashes.SHA256()))
                    results.append("ok")

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for n in range(tasks):
                nursery.start_soon(task, n)
    assert results == ["ok"] * ops, f"{results.count('wrong')} wrong in {time.perf_counter() - started:.1f} s"


# The fault tests come last in this file: they reset the session's TPM.


async def test_a_frozen_tpm_times_out_and_is_used_again_when_it_thaws(
    tpm_token: TpmToken, tpm_keys: dict[str, tuple[str, Any]]
) -> None:
    label, pub = tpm_keys["p256"]
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    async with TokenPool.open(tpm_token.config(timeout=1.0)) as pool:
        key = pool.key(label)
        await key.sign(b"before", HashName.SHA256)
        tpm_token.tpm.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(KeyBackendError, match="no answer"):
                await key.sign(b"frozen", HashName.SHA256)
            assert time.monotonic() - started < 3
            with pytest.raises(KeyBackendError, match="no answer"):  # queued behind the stuck call
                await key.sign(b"still frozen", HashName.SHA256)
        finally:
            tpm_token.tpm.thaw()
        with trio.fail_after(20):
            while True:
                try:
                    sig = await key.sign(b"after", HashName.SHA256)
                    break
                except KeyBackendError:
                    await trio.sleep(0.2)
        pub.verify(sig, b"after", ec.ECDSA(hashes.SHA256()))


async def test_after_a_tpm_reset_the_pool_reinitialises_the_module_by_itself(
    tpm_token: TpmToken, tpm_keys: dict[str, tuple[str, Any]]
) -> None:
    """Every call fails after a TPM reset until tpm2-pkcs11 is initialised again in the process:
    the failing call marks the session, the next one re-initialises, logs in and succeeds."""
    ra_label, ra_pub = tpm_keys["ra"]
    assert isinstance(ra_pub, rsa.RSAPublicKey)
    cek = os.urandom(16)
    block = ra_pub.encrypt(cek, padding.PKCS1v15())
    async with TokenPool.open(tpm_token.config()) as pool:
        ra = pool.key(ra_label)
        assert (await ra.unwrap(block, RsaPadding.PKCS1V15, None, 16)).key == cek
        # In this thread: the harness's processes die with the thread that started them.
        tpm_token.tpm.restart_tpm()
        with pytest.raises(KeyBackendError):
            await pool.ping()  # the first call meets the reset TPM: a 503, /readyz not ready
        await pool.ping()  # the next one re-initialised the module
        assert (await ra.unwrap(block, RsaPadding.PKCS1V15, None, 16)).key == cek
        data = b"after the reset"
        ra_pub.verify(await ra.sign(data, HashName.SHA256), data, padding.PKCS1v15(), hashes.SHA256())
