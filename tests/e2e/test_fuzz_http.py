"""Bounded fuzzing of PKIOperation over HTTP (issue 14 point 7): mutated real requests, addressed to
the daemon's own CA and carrying its challenge, by POST and by GET, get 200 (a CertRep) or a 4xx,
never a 5xx, and the daemon keeps enrolling. The long run is `bench/fuzz.py http`."""

from __future__ import annotations

import base64
import datetime as dt
import os
from functools import cache

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scepd.scep.client import build_pki_message, make_self_signed
from scepd.scep.constants import FailInfo, MessageType, PkiStatus
from tests.e2e.conftest import CHALLENGE
from tests.support.daemon import Daemon
from tests.support.fuzzing import Seeds, make_seeds, mutate
from tests.support.scep_client import Client, make_csr, rsa_key


def _recipient(daemon: Daemon) -> bytes:
    """The certificate clients encrypt to: the RA's on the default layout, else the CA's."""
    return (daemon.ra_pem if daemon.ra_pem.exists() else daemon.ca_pem).read_bytes()


@cache
def _seeds(ca_pem: bytes) -> Seeds:
    return make_seeds(x509.load_pem_x509_certificate(ca_pem), CHALLENGE)


ops = st.lists(
    st.tuples(st.integers(0, 1 << 16), st.integers(0, 1 << 16), st.integers(0, 1 << 16)), min_size=1, max_size=4
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_requests_never_get_a_5xx(daemon: Daemon, data: st.DataObject) -> None:
    seeds = _seeds(_recipient(daemon))
    seed = data.draw(st.sampled_from(seeds.messages), label="seed")
    body = mutate(seed, data.draw(ops, label="ops"), seeds.envelopes[0])
    if data.draw(st.booleans(), label="get"):
        r = httpx.get(
            daemon.url, params={"operation": "PKIOperation", "message": base64.b64encode(body).decode()}, timeout=30
        )
    else:
        r = httpx.post(
            daemon.url,
            params={"operation": "PKIOperation"},
            content=body,
            timeout=30,
            headers={"content-type": "application/x-pki-message"},
        )
    assert r.status_code in (200, 400, 413), (r.status_code, r.text[:300])


async def test_signer_certificate_with_an_unreadable_subject_is_refused(daemon: Daemon, client: Client) -> None:
    """Found by the fuzzer: cryptography reads a certificate's subject lazily, and the signer
    certificate is outside what the request's signature covers. A request with the right challenge
    whose signer certificate has a subject that does not parse made scepd sign a certificate and then
    fail to record it (HTTP 500)."""
    key = rsa_key()
    csr = make_csr(key, "unreadable-signer", CHALLENGE)
    good = make_self_signed(key, x509.Name.from_rfc4514_string("CN=unreadable-signer"), dt.datetime.now(dt.UTC))
    der = good.public_bytes(Encoding.DER)
    subject = good.subject.public_bytes()
    at = der.rindex(subject)  # the subject (self-signed: the issuer, which the signer lookup compares, is first)
    broken = der[:at] + subject.replace(b"\x0c", b"\x01", 1) + der[at + len(subject) :]
    body = build_pki_message(
        message_type=MessageType.PKCS_REQ,
        payload=csr.public_bytes(Encoding.DER),
        transaction_id=os.urandom(8).hex(),
        sender_nonce=os.urandom(16),
        recipient_certificate=client.recipient,
        signer_certificate=good,
        signer_key=key,
    )
    assert body.count(der) == 1
    r = await client.post(body.replace(der, broken))
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])
    if r.status_code == 200:
        from scepd.scep.client import parse_cert_rep

        rep = parse_cert_rep(r.content, decrypt_key=key, trusted_signers=client.ca_certs)
        assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_CERT_ID, rep


async def test_still_enrolls_after_the_fuzzing(daemon: Daemon, client: Client) -> None:
    rep, _ = await client.enroll("after-fuzz", CHALLENGE)
    assert rep.status is PkiStatus.SUCCESS
    assert daemon.alive()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_csrs_in_a_valid_envelope_never_get_a_5xx(daemon: Daemon, data: st.DataObject) -> None:
    """The outer mutations above rarely get past the signature; these reach the CSR reader behind
    the envelope: a well-signed, well-enveloped request carrying a mutated PKCS#10."""
    seeds = _seeds(_recipient(daemon))
    csr = mutate(seeds.csrs[0], data.draw(ops, label="ops"), seeds.messages[0])
    key = _client_key()
    ca = x509.load_pem_x509_certificate(_recipient(daemon))
    subject = x509.Name.from_rfc4514_string("CN=fuzzed csr")
    body = build_pki_message(
        message_type=MessageType.PKCS_REQ,
        payload=csr,
        transaction_id=os.urandom(8).hex(),
        sender_nonce=os.urandom(16),
        recipient_certificate=ca,
        signer_certificate=make_self_signed(key, subject, dt.datetime.now(dt.UTC)),
        signer_key=key,
    )
    r = httpx.post(
        daemon.url,
        params={"operation": "PKIOperation"},
        content=body,
        timeout=30,
        headers={"content-type": "application/x-pki-message"},
    )
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])


@cache
def _client_key() -> rsa.RSAPrivateKey:
    return rsa_key()
