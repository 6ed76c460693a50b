"""scepd.der against asn1crypto: the hand-written encoders must write what the library writes."""

from __future__ import annotations

import datetime as dt

from asn1crypto import core
from asn1crypto import x509 as a_x509
from hypothesis import given
from hypothesis import strategies as st

from scepd import der


@given(st.integers(min_value=0, max_value=(1 << 200) - 1))
def test_integer_matches_asn1crypto(n: int) -> None:
    assert der.integer(n) == core.Integer(n).dump()


@given(st.binary(max_size=70000))
def test_octet_string_and_lengths_match_asn1crypto(data: bytes) -> None:
    assert der.octet_string(data) == core.OctetString(data).dump()


class OctetStrings(core.SetOf):
    _child_spec = core.OctetString


class OctetStringSequence(core.SequenceOf):
    _child_spec = core.OctetString


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_set_of_is_sorted_by_encoding(values: list[bytes]) -> None:
    encoded = [der.octet_string(v) for v in values]
    assert der.set_of(encoded) == OctetStrings([core.OctetString(v) for v in values]).dump()
    # Unsorted: the caller's order, under the SET tag.
    kept = OctetStringSequence([core.OctetString(v) for v in values]).dump()
    assert der.set_of(encoded, sort=False) == b"\x31" + kept[1:]


@given(st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)))
def test_x509_time_matches_asn1crypto(when: dt.datetime) -> None:
    whole = when.replace(microsecond=0)
    expected = a_x509.Time({"utc_time": whole} if whole.year < 2050 else {"general_time": whole}).dump()
    assert der.x509_time(when) == expected


def test_oid_and_strings() -> None:
    assert der.oid("1.2.840.113549.1.7.1") == core.ObjectIdentifier("1.2.840.113549.1.7.1").dump()
    assert der.printable_string("19") == core.PrintableString("19").dump()
    assert der.utf8_string("grüße") == core.UTF8String("grüße").dump()
    assert der.bit_string(b"\x01\x02") == core.BitString.load(b"\x03\x03\x00\x01\x02").dump()


def test_algorithm_identifiers_are_the_bytes_asn1crypto_wrote() -> None:
    """The algorithm identifiers now written with scepd.der and scepd.oids are byte for byte what
    asn1crypto's builders wrote before, for every hash, RSA and EC."""
    from asn1crypto import algos
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from scepd.ca import certificates
    from scepd.keys.base import HashName
    from scepd.scep import signed

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    for h in HashName:
        assert signed.digest_algorithm_der(h) == algos.DigestAlgorithm({"algorithm": h.value}).dump()
        for key, kind in ((rsa_key, "rsa"), (ec_key, "ecdsa")):
            expected = algos.SignedDigestAlgorithm({"algorithm": f"{h.value}_{kind}"}).dump()
            assert certificates.signature_algorithm_der(key, h) == expected
        assert (
            signed.signature_algorithm_der(ec_key, h)
            == algos.SignedDigestAlgorithm({"algorithm": f"{h.value}_ecdsa"}).dump()
        )
    cms_rsa = algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}).dump()
    assert signed.signature_algorithm_der(rsa_key, HashName.SHA256) == cms_rsa


def test_key_encryption_algorithm_is_the_bytes_asn1crypto_wrote() -> None:
    """The envelope's keyEncryptionAlgorithm, written with scepd.der: the same bytes as asn1crypto's
    cms.KeyEncryptionAlgorithm, for PKCS#1 v1.5 and every OAEP hash, MGF hash and label."""
    from asn1crypto import cms

    from scepd.keys.base import HashName, OaepParams, RsaPadding
    from scepd.scep.envelope import _key_encryption_algorithm_der

    assert (
        _key_encryption_algorithm_der(RsaPadding.PKCS1V15, None)
        == cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15", "parameters": None}).dump()
    )
    for h in HashName:
        for m in HashName:
            for label in (b"", b"label"):
                params: dict[str, object] = {
                    "hash_algorithm": {"algorithm": h.value},
                    "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": m.value}},
                }
                if label:
                    params["p_source_algorithm"] = {"algorithm": "p_specified", "parameters": label}
                expected = cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_oaep", "parameters": params}).dump()
                assert _key_encryption_algorithm_der(RsaPadding.OAEP, OaepParams(h, m, label)) == expected


def test_issuer_and_subject_and_serial_match_asn1crypto() -> None:
    from asn1crypto import cms
    from asn1crypto import x509 as asn1_x509
    from cryptography import x509

    from scepd.scep.client import issuer_and_serial, issuer_and_subject
    from scepd.scep.message import IssuerAndSubject

    issuer = x509.Name.from_rfc4514_string("CN=scepd CA,O=Example,C=DE")
    subject = x509.Name.from_rfc4514_string("CN=device-ü,O=Example")
    a, b = asn1_x509.Name.load(issuer.public_bytes()), asn1_x509.Name.load(subject.public_bytes())
    assert issuer_and_subject(issuer, subject) == IssuerAndSubject({"issuer": a, "subject": b}).dump()
    for serial in (1, 0x7F, 0x80, 0xFF, 2**159 + 12345):
        expected = cms.IssuerAndSerialNumber({"issuer": a, "serial_number": serial}).dump()
        assert issuer_and_serial(issuer, serial) == expected


def test_printable_string_round_trips_latin1_like_asn1crypto() -> None:
    from asn1crypto import core

    from scepd import der

    for text in ("4711", "tid with spaces", "caf\xe9"):
        assert der.printable_string(text) == core.PrintableString(text).dump()


async def test_csr_is_the_request_asn1crypto_wrote() -> None:
    """`scepd ca csr`'s PKCS#10, now written with scepd.der: the same bytes as the asn1crypto
    builder it replaced (RSA PKCS#1 v1.5 signatures are deterministic), and a valid request."""
    from asn1crypto import core
    from asn1crypto import csr as a_csr
    from asn1crypto import keys as a_keys
    from asn1crypto import x509 as a_x509
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from scepd.ca.certificates import sign_csr
    from scepd.keys.base import HashName
    from scepd.keys.software import SoftwareKey

    subject = x509.Name.from_rfc4514_string("CN=Example SCEP CA,O=Example")
    extensions = [
        x509.Extension(x509.BasicConstraints.oid, True, x509.BasicConstraints(ca=True, path_length=0)),
        x509.Extension(x509.SubjectKeyIdentifier.oid, False, x509.SubjectKeyIdentifier(b"\x01" * 20)),
    ]
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = SoftwareKey(private)

    async def reference(exts: list[x509.Extension[x509.ExtensionType]]) -> bytes:
        attrs = []
        if exts:
            values = [
                a_x509.Extension(
                    {
                        "extn_id": e.oid.dotted_string,
                        "critical": e.critical,
                        "extn_value": core.ParsableOctetString(e.value.public_bytes()),
                    }
                )
                for e in exts
            ]
            attrs.append({"type": "extension_request", "values": [values]})
        spki = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        info = a_csr.CertificationRequestInfo(
            {
                "version": "v1",
                "subject": a_x509.Name.load(subject.public_bytes()),
                "subject_pk_info": a_keys.PublicKeyInfo.load(spki),
                "attributes": attrs,
            }
        ).dump()
        signature = await key.sign(info, HashName.SHA256)
        return a_csr.CertificationRequest(
            {
                "certification_request_info": a_csr.CertificationRequestInfo.load(info),
                "signature_algorithm": {"algorithm": "sha256_rsa"},
                "signature": signature,
            }
        ).dump()

    for exts in ([], extensions):
        ours = await sign_csr(subject, key, exts)
        assert ours == await reference(exts)
        csr = x509.load_der_x509_csr(ours)
        assert csr.is_signature_valid and csr.subject == subject and list(csr.extensions) == exts
    ec_csr = x509.load_der_x509_csr(
        await sign_csr(subject, SoftwareKey(ec.generate_private_key(ec.SECP384R1())), extensions)
    )
    assert ec_csr.is_signature_valid and list(ec_csr.extensions) == extensions
