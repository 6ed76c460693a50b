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
from functools import lru_cache

import trio
from cryptography import x509

from scepd import der
from scepd.ca.certificates import signature_algorithm_der
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
        return cls(der=der, number=number, this_update=crl.last_update_utc, next_update=next_update, revoked=len(crl))

    @property
    def pem(self) -> bytes:
        b64 = base64.encodebytes(self.der).replace(b"\n", b"")
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        return b"-----BEGIN X509 CRL-----\n" + b"\n".join(lines) + b"\n-----END X509 CRL-----\n"


_INLINE_ENTRIES = 1000


@lru_cache(maxsize=16)
def _entry_extensions(reason: str | None) -> bytes:
    """crlEntryExtensions for `reason` (the same few bytes for every entry with that reason)."""
    flag = REVOCATION_REASONS.get(reason or "")
    # RFC 5280 5.3.1: rather than reasonCode unspecified, the extension SHOULD be absent.
    if flag is None or flag is x509.ReasonFlags.unspecified:
        return b""
    reason_ext = x509.CRLReason(flag)
    return der.sequence(
        der.sequence(der.oid(reason_ext.oid.dotted_string), der.octet_string(reason_ext.public_bytes()))
    )


def _revoked_certificates(entries: Sequence[RevokedEntry]) -> bytes:
    """revokedCertificates written directly: asn1crypto is far too slow for a CRL of a large store
    (docs/benchmarks.md, "CRL encoding")."""
    sequence, integer, x509_time = der.sequence, der.integer, der.x509_time
    return sequence(
        *(sequence(integer(e.serial), x509_time(e.revoked_at), _entry_extensions(e.reason)) for e in entries)
    )


def _extension_der(value: x509.ExtensionType) -> bytes:
    return der.sequence(der.oid(value.oid.dotted_string), der.octet_string(value.public_bytes()))


async def sign_crl(template: CrlTemplate, signer: Signer, hash: HashName = HashName.SHA256) -> Crl:
    """Build the TBSCertList for `template` and have `signer` sign it."""
    sig_alg = signature_algorithm_der(signer.public_key, hash)
    if len(template.entries) > _INLINE_ENTRIES:
        # Encoding time grows with the entries (docs/benchmarks.md): a large CRL is encoded beside the event loop.
        tbs_der = await trio.to_thread.run_sync(_tbs_cert_list, template, sig_alg)
    else:
        tbs_der = _tbs_cert_list(template, sig_alg)
    signature = await signer.sign(tbs_der, hash)
    return Crl(
        der=der.sequence(tbs_der, sig_alg, der.bit_string(signature)),
        number=template.number,
        this_update=template.this_update.astimezone(dt.UTC).replace(microsecond=0),
        next_update=template.next_update.astimezone(dt.UTC).replace(microsecond=0),
        revoked=len(template.entries),
    )


def _tbs_cert_list(template: CrlTemplate, sig_alg: bytes) -> bytes:
    extensions = der.context(
        0,
        der.sequence(
            _extension_der(x509.AuthorityKeyIdentifier(template.authority_key_id, None, None)),
            _extension_der(x509.CRLNumber(template.number)),
        ),
    )
    return der.sequence(
        der.integer(1),  # v2
        sig_alg,
        template.issuer.public_bytes(),
        der.x509_time(template.this_update),
        der.x509_time(template.next_update),
        # RFC 5280 5.1.2.6: with no revoked certificates the list is absent, not empty.
        _revoked_certificates(template.entries) if template.entries else b"",
        extensions,
    )
