"""RFC 5280 v2 CRLs, signed by the CA key on the token.

As with certificates (`certificates.py`), `cryptography` encodes each
extension value, asn1crypto assembles the TBSCertList, and the `Signer` signs
its DER. Nothing here reads the clock or the store: the caller passes the
revoked entries, the CRL number and the times.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from asn1crypto import core
from asn1crypto import crl as a_crl
from cryptography import x509

from scepd.ca.certificates import _name, _time, signature_algorithm
from scepd.keys.base import HashName, Signer
from scepd.store.base import RevokedEntry

# The RFC 5280 5.3.1 CRLReason names a revocation may be recorded with; the store
# keeps them as these camelCase strings. Two are left out on purpose:
# certificateHold, because the store cannot release a hold (every revocation is
# final), and removeFromCRL, which only has a meaning in delta CRLs.
REVOCATION_REASONS: Mapping[str, x509.ReasonFlags] = {
    flag.value: flag
    for flag in x509.ReasonFlags
    if flag not in (x509.ReasonFlags.certificate_hold, x509.ReasonFlags.remove_from_crl)
}


def parse_reason(name: str) -> str:
    """The RFC 5280 name for `name` (camelCase, or cryptography's snake_case); ValueError otherwise."""
    for flag in REVOCATION_REASONS.values():
        if name in (flag.value, flag.name):
            return flag.value
    raise ValueError(f"unknown revocation reason {name!r}; choose from {', '.join(REVOCATION_REASONS)}")


def _extension(value: x509.ExtensionType, critical: bool = False) -> dict[str, object]:
    return {
        "extn_id": value.oid.dotted_string,
        "critical": critical,
        "extn_value": core.ParsableOctetString(value.public_bytes()),
    }


def _entry(entry: RevokedEntry) -> dict[str, object]:
    fields: dict[str, object] = {
        "user_certificate": entry.serial,
        "revocation_date": _time(entry.revoked_at),
    }
    flag = REVOCATION_REASONS.get(entry.reason or "")
    # RFC 5280 5.3.1: rather than reasonCode unspecified, the extension SHOULD be absent.
    if flag is not None and flag is not x509.ReasonFlags.unspecified:
        fields["crl_entry_extensions"] = [_extension(x509.CRLReason(flag))]
    return fields


@dataclass(frozen=True)
class CrlTemplate:
    """Everything that goes into a CRL except the signature."""

    issuer: x509.Name
    authority_key_id: bytes  # the key identifier the CA's issued certificates carry
    number: int  # RFC 5280 5.2.3: monotonically increasing, at most 20 octets
    this_update: dt.datetime
    next_update: dt.datetime
    entries: Sequence[RevokedEntry]

    def __post_init__(self) -> None:
        if not 0 <= self.number < 1 << 159:
            raise ValueError("a CRL number is a non-negative integer of at most 20 octets")
        if self.next_update <= self.this_update:
            raise ValueError("nextUpdate must be later than thisUpdate")


@dataclass(frozen=True)
class Crl:
    """A signed CRL and what a publisher needs to know about it."""

    der: bytes
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    revoked: int  # number of entries

    @classmethod
    def from_der(cls, der: bytes) -> Crl:
        """A CRL this CA signed earlier, read back (a serving process takes the primary's from the store)."""
        crl = x509.load_der_x509_crl(der)
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        next_update = crl.next_update_utc
        if next_update is None:
            raise ValueError("a CRL without nextUpdate was not signed by scepd")
        return cls(der=der, number=number, this_update=crl.last_update_utc, next_update=next_update,
                   revoked=len(crl))

    @property
    def pem(self) -> bytes:
        b64 = base64.encodebytes(self.der).replace(b"\n", b"")
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        return b"-----BEGIN X509 CRL-----\n" + b"\n".join(lines) + b"\n-----END X509 CRL-----\n"


async def sign_crl(template: CrlTemplate, signer: Signer, hash: HashName = HashName.SHA256) -> Crl:
    """Build the TBSCertList for `template` and have `signer` sign it."""
    sig_alg = signature_algorithm(signer.public_key, hash)
    tbs = a_crl.TbsCertList(
        {
            "version": "v2",
            "signature": sig_alg,
            "issuer": _name(template.issuer),
            "this_update": _time(template.this_update),
            "next_update": _time(template.next_update),
            "crl_extensions": [
                _extension(x509.AuthorityKeyIdentifier(template.authority_key_id, None, None)),
                _extension(x509.CRLNumber(template.number)),
            ],
        }
    )
    # RFC 5280 5.1.2.6: with no revoked certificates the list is absent, not empty.
    if template.entries:
        tbs["revoked_certificates"] = [_entry(e) for e in template.entries]
    tbs_der = tbs.dump()
    signature = await signer.sign(tbs_der, hash)
    cert_list = a_crl.CertificateList(
        {
            "tbs_cert_list": a_crl.TbsCertList.load(tbs_der),
            "signature_algorithm": sig_alg,
            "signature": signature,
        }
    )
    return Crl(
        der=cert_list.dump(),
        number=template.number,
        this_update=template.this_update.astimezone(dt.timezone.utc).replace(microsecond=0),
        next_update=template.next_update.astimezone(dt.timezone.utc).replace(microsecond=0),
        revoked=len(template.entries),
    )
