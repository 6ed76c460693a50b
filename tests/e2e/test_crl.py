"""CRLs end to end: served over HTTP and by GetCRL."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from cryptography import x509

from scepd.scep.client import issuer_and_serial
from scepd.scep.constants import FailInfo, MessageType, PkiStatus
from tests.daemon import Daemon
from tests.scep_client import Client, make_csr, rsa_key


def fetch_crl(daemon: Daemon) -> x509.CertificateRevocationList:
    r = httpx.get(daemon.base_url + "/crl/ca.crl", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(r.content)
    ca = x509.load_pem_x509_certificate(daemon.ca_pem.read_bytes())
    assert crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    return crl


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


@pytest.mark.parametrize("with_ra", [False, True])
async def test_get_crl_answers_the_current_crl(client: Client, ra_client: Client, with_ra: bool) -> None:
    c = ra_client if with_ra else client
    ca = c.ca_certs[-1]
    key = rsa_key()
    body = c.message(make_csr(key, "crl-reader", None), key, message_type=MessageType.GET_CRL,
                     payload=issuer_and_serial(ca.subject, 12345))
    rep = await c.send(body, key)
    assert rep.status is PkiStatus.SUCCESS, (rep.fail_info, rep.fail_info_text)
    assert rep.certificates == [] and len(rep.crls) == 1
    crl = x509.load_der_x509_crl(rep.crls[0])
    assert crl.issuer == ca.subject
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl_number(crl) >= 1


async def test_get_crl_for_another_issuer_is_bad_cert_id(client: Client) -> None:
    key = rsa_key()
    stranger = x509.Name.from_rfc4514_string("CN=Some Other CA")
    body = client.message(make_csr(key, "crl-reader", None), key, message_type=MessageType.GET_CRL,
                          payload=issuer_and_serial(stranger, 1))
    rep = await client.send(body, key)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_CERT_ID


def test_crl_is_served_over_http(daemon: Daemon) -> None:
    crl = fetch_crl(daemon)
    assert crl_number(crl) >= 1
    assert crl.next_update_utc is not None and crl.last_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(hours=24)
