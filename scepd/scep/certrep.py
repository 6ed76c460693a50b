"""Outgoing CertRep (RFC 8894 3.3.2), built in two phases.

`build_cert_rep` does everything but the signature and hands back the exact
bytes to sign; the RA key (on a token, usually) signs them; `finish` puts the
signature in. That keeps the codec free of key material and of I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from scepd import der, oids
from scepd.keys.base import HashName, OaepParams, RsaPadding
from scepd.scep.certs_only import build_degenerate
from scepd.scep.ciphers import ContentCipher
from scepd.scep.constants import FailInfo, MessageType, PkiStatus
from scepd.scep.envelope import build_envelope
from scepd.scep.signed import SignedDataDraft, attribute_der, draft_signed_data, sign_draft


@dataclass(frozen=True)
class CertRepDraft:
    """A CertRep waiting for its signature over `to_be_signed` with `digest`."""

    _draft: SignedDataDraft = field(repr=False)

    @property
    def to_be_signed(self) -> bytes:
        return self._draft.to_be_signed

    @property
    def digest(self) -> HashName:
        return self._draft.digest

    def finish(self, signature: bytes) -> bytes:
        """The complete DER ContentInfo; the signature is not checked here."""
        return self._draft.finish(signature)


def build_cert_rep(
    *,
    transaction_id: str,
    recipient_nonce: bytes,
    sender_nonce: bytes,
    status: PkiStatus,
    fail_info: FailInfo | None = None,
    fail_info_text: str | None = None,
    certificates: Sequence[bytes] = (),
    crls: Sequence[bytes] = (),
    recipient_certificate: x509.Certificate | None = None,
    cipher: ContentCipher = ContentCipher.AES256_CBC,
    recipient_padding: RsaPadding = RsaPadding.PKCS1V15,
    recipient_oaep: OaepParams | None = None,
    signer_certificate: x509.Certificate,
    digest: HashName = HashName.SHA256,
    extra_certificates: Sequence[bytes] = (),
) -> CertRepDraft:
    """Only SUCCESS carries content (certificates/CRLs enveloped to the requester);
    FAILURE and PENDING are signed attributes over empty content."""
    if status is PkiStatus.FAILURE and fail_info is None:
        raise ValueError("a FAILURE CertRep needs a failInfo")
    if status is not PkiStatus.FAILURE and fail_info is not None:
        raise ValueError("failInfo is only allowed on FAILURE")
    # FAILURE and PENDING carry an empty eContent rather than none: OpenSSL's
    # PKCS7_verify (certmonger) reads absent content as detached and fails with
    # "no content", while an empty OCTET STRING verifies everywhere.
    content = b""
    if status is PkiStatus.SUCCESS:
        if recipient_certificate is None:
            raise ValueError("a SUCCESS CertRep needs the recipient certificate to envelope to")
        content = build_envelope(
            build_degenerate(certificates, crls),
            recipient_certificate,
            cipher=cipher,
            rsa_padding=recipient_padding,
            oaep=recipient_oaep,
        )
    attrs = [
        attribute_der(oids.SCEP_MESSAGE_TYPE, der.printable_string(MessageType.CERT_REP.value)),
        attribute_der(oids.SCEP_PKI_STATUS, der.printable_string(status.value)),
        # Latin-1, no character-set check: the transactionID goes back encoded as it came.
        attribute_der(oids.SCEP_TRANSACTION_ID, der.printable_string(transaction_id)),
        # Echoed byte for byte: older iOS sends 8-byte nonces and matches them exactly.
        attribute_der(oids.SCEP_RECIPIENT_NONCE, der.octet_string(recipient_nonce)),
        attribute_der(oids.SCEP_SENDER_NONCE, der.octet_string(sender_nonce)),
    ]
    if fail_info is not None:
        attrs.append(attribute_der(oids.SCEP_FAIL_INFO, der.printable_string(fail_info.value)))
        if fail_info_text:
            attrs.append(attribute_der(oids.SCEP_FAIL_INFO_TEXT, der.utf8_string(fail_info_text)))
    return CertRepDraft(
        draft_signed_data(
            content=content,
            attributes=attrs,
            signer_certificate=signer_certificate,
            digest_name=digest,
            certificates=extra_certificates,
        )
    )


# One signing step for every draft (scepd.scep.signed.sign_draft); the name says what is signed.
sign_cert_rep = sign_draft
