"""What a verifier reads of a CMS SignedData, from either of two parsers.

`read_signed` walks strict DER by offsets (`scepd.strict_der`), which is
what real clients send and costs a tenth of asn1crypto; anything else (BER,
an unexpected choice) goes through asn1crypto. Both give the same
`SignedView`, so the checks made on a request (`scepd.scep.message`) are
written once and cannot differ between the two; the tests compare the two
readers on the same messages, mutated or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509

from scepd import der, oids
from scepd import strict_der as sd
from scepd.scep.errors import MalformedMessage
from scepd.scep.signed import (
    ASN1_ERRORS,
    attribute_values,
    embedded_certificates,
    find_signer,
    key_identifier_matches,
    signed_attrs_candidates,
)

_OID_SIGNED_DATA = der.oid(oids.SIGNED_DATA)[2:]
# Attributes asn1crypto reads by a type of its own (cms.CMSAttributeType), so that the general
# reader refuses a value of another type: the fast path must refuse the same ones. The three a
# SCEP request carries are checked by tag; the others never appear in one and go the general way.
_SPEC_TYPED: dict[str, tuple[int, ...]] = {
    oids.CONTENT_TYPE: (der.OID,),
    oids.MESSAGE_DIGEST: (der.OCTET_STRING,),
    oids.SIGNING_TIME: (der.UTC_TIME, der.GENERALIZED_TIME),
    **{
        oid: ()
        for oid in (
            oids.COUNTERSIGNATURE,
            oids.SMIME_CAPABILITIES,
            oids.ENCRYPTION_KEY_PREFERENCE,
            oids.TIME_STAMP_TOKEN,
            oids.CMS_ALGORITHM_PROTECTION,
            oids.MS_NESTED_SIGNATURE,
            oids.MS_COUNTERSIGNATURE,
        )
    },
}


class SignedView(Protocol):
    """The parts of a SignedData with its (first) SignerInfo, as `_parse` needs them.

    Accessors may raise the errors of `ASN1_ERRORS` for a malformed part
    (asn1crypto parses lazily), so the caller can answer with what it has
    already learned.
    """

    @property
    def signer_count(self) -> int: ...

    def attributes(self) -> dict[str, list[core.Asn1Value]]:
        """Signed attributes by dotted OID, each value as its universal ASN.1 type; {} when absent."""

    def signer_der(self) -> bytes | None:
        """DER of the embedded certificate the SignerIdentifier names, or None."""

    def digest_algorithm(self) -> algos.DigestAlgorithm: ...

    def encapsulated(self) -> tuple[str, object]:
        """(eContentType dotted, eContent value: bytes, or None when absent)."""

    def signature(self) -> bytes: ...

    def signature_algorithm(self) -> algos.SignedDigestAlgorithm: ...

    def to_be_signed(self) -> Iterator[bytes]:
        """What the signer may have signed: the attributes as sent (re-tagged SET), then a canonical form."""


def read_signed(data: bytes) -> SignedView:
    """The view of a ContentInfo(SignedData); MalformedMessage when it is not one."""
    try:
        return _StrictSigned(data)
    except (ValueError, IndexError):  # NotStrictDer, or anything the walk did not foresee: the general parser decides
        return _Asn1Signed(data)


def load_signed_data(data: bytes) -> cms.SignedData:
    """The SignedData inside a ContentInfo, by asn1crypto, or MalformedMessage."""
    try:
        info = cms.ContentInfo.load(data)
        if info["content_type"].native != "signed_data":
            raise MalformedMessage("the message is not a CMS SignedData")
        signed = info["content"]
        # Touch the parts every caller needs so lazy-parse errors surface here
        # (cheaply: converting the signer infos to native values cost more than verifying them).
        signed["encap_content_info"]["content_type"].native  # noqa: B018
        for signer_info in signed["signer_infos"]:
            signer_info["signed_attrs"]  # noqa: B018
        return signed
    except MalformedMessage:
        raise
    except ASN1_ERRORS as e:
        raise MalformedMessage(f"unparseable CMS: {e}") from e


class _Asn1Signed:
    """Any BER that asn1crypto reads."""

    def __init__(self, data: bytes) -> None:
        signed = load_signed_data(data)
        infos = signed["signer_infos"]
        self._signed = signed
        self.signer_count = len(infos)
        self._info = infos[0] if len(infos) else None

    def attributes(self) -> dict[str, list[core.Asn1Value]]:
        assert self._info is not None
        if not self._info["signed_attrs"]:
            return {}
        return attribute_values(self._info)

    def signer_der(self) -> bytes | None:
        assert self._info is not None
        found = find_signer(self._info, embedded_certificates(self._signed))
        return None if found is None else found.dump()

    def digest_algorithm(self) -> algos.DigestAlgorithm:
        assert self._info is not None
        return self._info["digest_algorithm"]

    def encapsulated(self) -> tuple[str, object]:
        encap = self._signed["encap_content_info"]
        return encap["content_type"].dotted, encap["content"].native if encap["content"] else None

    def signature(self) -> bytes:
        assert self._info is not None
        return self._info["signature"].native  # type: ignore[no-any-return]

    def signature_algorithm(self) -> algos.SignedDigestAlgorithm:
        assert self._info is not None
        return self._info["signature_algorithm"]

    def to_be_signed(self) -> Iterator[bytes]:
        assert self._info is not None
        return signed_attrs_candidates(self._info)


class _StrictSigned:
    """Strict DER in the shape RFC 5652 5.1 gives, read by offsets; raises NotStrictDer otherwise.

    The whole structure is walked here, certificates' serials and issuers
    included, so the accessors cannot meet a framing error later.
    """

    def __init__(self, data: bytes) -> None:
        d = self._data = data
        start, end = sd.whole(d, der.SEQUENCE)
        parts = sd.children(d, start, end)
        if len(parts) != 2 or parts[0][0] != der.OID or parts[1][0] != der.CONTEXT_0:
            raise sd.NotStrictDer("not a ContentInfo")
        if d[parts[0][2] : parts[0][3]] != _OID_SIGNED_DATA:
            raise sd.NotStrictDer("not SignedData")
        start, end = _only(d, parts[1][2], parts[1][3], der.SEQUENCE)
        fields = sd.children(d, start, end)
        tags = [f[0] for f in fields]
        if len(tags) < 4 or tags[:3] != [der.INTEGER, der.SET, der.SEQUENCE] or tags[-1] != der.SET:
            raise sd.NotStrictDer("not a SignedData")
        middle = tags[3:-1]
        if middle not in ([], [der.CONTEXT_0], [der.CONTEXT_1], [der.CONTEXT_0, der.CONTEXT_1]):
            raise sd.NotStrictDer("unexpected SignedData fields")
        self._read_encap(fields[2])
        self._certs: list[tuple[bytes, int, bytes]] = []
        if middle and middle[0] == der.CONTEXT_0:
            self._read_certificates(fields[3])
        infos = sd.children(d, fields[-1][2], fields[-1][3])
        self.signer_count = len(infos)
        if len(infos) == 1:
            self._read_signer_info(infos[0])

    def _read_encap(self, field: tuple[int, int, int, int]) -> None:
        d = self._data
        inner = sd.children(d, field[2], field[3])
        if not inner or inner[0][0] != der.OID or len(inner) > 2:
            raise sd.NotStrictDer("not an EncapsulatedContentInfo")
        self._content_type = sd.oid_text(d[inner[0][2] : inner[0][3]])
        self._content: bytes | None = None
        if len(inner) == 2:
            if inner[1][0] != der.CONTEXT_0:
                raise sd.NotStrictDer("eContent is not [0]")
            start, end = _only(d, inner[1][2], inner[1][3], der.OCTET_STRING)
            self._content = d[start:end]

    def _read_certificates(self, field: tuple[int, int, int, int]) -> None:
        d = self._data
        for tag, begin, _start, end in sd.children(d, field[2], field[3]):
            if tag != der.SEQUENCE:
                raise sd.NotStrictDer("a CertificateChoices other than a certificate")
            cert = d[begin:end]
            issuer, serial = sd.issuer_and_serial(cert)
            self._certs.append((cert, sd.integer(serial, *sd.expect(serial, 0, len(serial), der.INTEGER)), issuer))

    def _read_signer_info(self, info: tuple[int, int, int, int]) -> None:
        d = self._data
        if info[0] != der.SEQUENCE:
            raise sd.NotStrictDer("a SignerInfo is not a SEQUENCE")
        fields = sd.children(d, info[2], info[3])
        tags = [f[0] for f in fields]
        if tags and tags[-1] == der.CONTEXT_1:  # unsignedAttrs: not read
            fields, tags = fields[:-1], tags[:-1]
        if tags[:1] != [der.INTEGER] or len(tags) not in (5, 6):
            raise sd.NotStrictDer("not a SignerInfo")
        sid, digest_alg = fields[1], fields[2]
        attrs = fields[3] if len(tags) == 6 else None
        sig_alg, signature = fields[-2], fields[-1]
        if digest_alg[0] != der.SEQUENCE or sig_alg[0] != der.SEQUENCE or signature[0] != der.OCTET_STRING:
            raise sd.NotStrictDer("not a SignerInfo")
        if attrs is not None and attrs[0] != der.CONTEXT_0:
            raise sd.NotStrictDer("signedAttrs is not [0]")
        self._sid_ski: bytes | None = None
        self._sid_issuer: bytes | None = None
        self._sid_serial = 0
        if sid[0] == der.SEQUENCE:
            ias = sd.children(d, sid[2], sid[3])
            if [t for t, *_ in ias] != [der.SEQUENCE, der.INTEGER]:
                raise sd.NotStrictDer("not an IssuerAndSerialNumber")
            name, serial = ias
            self._sid_issuer = d[name[1] : name[3]]
            self._sid_serial = sd.integer(d, serial[2], serial[3])
        elif sid[0] == der.CONTEXT_0_PRIMITIVE:
            self._sid_ski = d[sid[2] : sid[3]]
        else:
            raise sd.NotStrictDer("unknown SignerIdentifier")
        self._digest_alg = d[digest_alg[1] : digest_alg[3]]
        self._sig_alg = d[sig_alg[1] : sig_alg[3]]
        self._signature = d[signature[2] : signature[3]]
        self._attrs: list[tuple[bytes, str, list[bytes]]] = []  # (OID TLV, dotted, value TLVs)
        self._attrs_set = b""
        if attrs is not None:
            self._attrs_set = b"\x31" + d[attrs[1] + 1 : attrs[3]]
            for tag, _begin, start, end in sd.children(d, attrs[2], attrs[3]):
                parts = sd.children(d, start, end) if tag == der.SEQUENCE else []
                if len(parts) != 2 or parts[0][0] != der.OID or parts[1][0] != der.SET:
                    raise sd.NotStrictDer("not an Attribute")
                values = sd.children(d, parts[1][2], parts[1][3])
                dotted = sd.oid_text(d[parts[0][2] : parts[0][3]])
                if dotted in _SPEC_TYPED and any(v[0] not in _SPEC_TYPED[dotted] for v in values):
                    raise sd.NotStrictDer("an attribute value of the wrong type")
                oid_tlv = d[parts[0][1] : parts[0][3]]
                self._attrs.append((oid_tlv, dotted, [d[v[1] : v[3]] for v in values]))

    def attributes(self) -> dict[str, list[core.Asn1Value]]:
        out: dict[str, list[core.Asn1Value]] = {}
        for _oid, dotted, values in self._attrs:
            out.setdefault(dotted, []).extend(core.load(v) for v in values)
        return out

    def signer_der(self) -> bytes | None:
        if self._sid_ski is not None:  # rare: let asn1crypto compute key identifiers
            ski = self._sid_ski
            return next(
                (c for c, _, _ in self._certs if key_identifier_matches(asn1_x509.Certificate.load(c), ski)), None
            )
        for cert, serial, issuer in self._certs:
            if serial != self._sid_serial:
                continue
            # Byte-equal names are equal; only otherwise pay for RFC 4518 comparison.
            if issuer == self._sid_issuer or asn1_x509.Name.load(issuer) == asn1_x509.Name.load(self._sid_issuer):
                return cert
        return None

    def digest_algorithm(self) -> algos.DigestAlgorithm:
        return algos.DigestAlgorithm.load(self._digest_alg)

    def encapsulated(self) -> tuple[str, object]:
        return self._content_type, self._content

    def signature(self) -> bytes:
        return self._signature

    def signature_algorithm(self) -> algos.SignedDigestAlgorithm:
        return algos.SignedDigestAlgorithm.load(self._sig_alg)

    def to_be_signed(self) -> Iterator[bytes]:
        yield self._attrs_set
        canonical = der.set_of(der.sequence(oid, der.set_of(values)) for oid, _, values in self._attrs)
        if canonical != self._attrs_set:
            yield canonical


def _only(data: bytes, start: int, end: int, tag: int) -> tuple[int, int]:
    """Content of the single value with `tag` that fills data[start:end] exactly."""
    cs, ce = sd.expect(data, start, end, tag)
    if ce != end:
        raise sd.NotStrictDer("trailing bytes in a container")
    return cs, ce
