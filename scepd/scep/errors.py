"""Error types of the SCEP codec.

Two kinds, because the server answers them differently: a `ScepError` is a
SCEP-level failure that still deserves a signed FAILURE CertRep (so it carries
whatever was learned about the request before things went wrong), while a
`MalformedMessage` is not SCEP at all and gets a plain HTTP 400.
"""

from __future__ import annotations

from cryptography import x509

from scepd.scep.constants import FailInfo, MessageType


class MalformedMessage(Exception):
    """The bytes are not a parseable CMS SignedData; there is nobody to answer."""


class ScepError(Exception):
    """A request that failed a SCEP check; `fail_info` goes into the CertRep."""

    def __init__(
        self,
        fail_info: FailInfo,
        reason: str,
        *,
        transaction_id: str | None = None,
        sender_nonce: bytes | None = None,
        signer_certificate: x509.Certificate | None = None,
        message_type: MessageType | None = None,
    ) -> None:
        super().__init__(f"{fail_info.name}: {reason}")
        self.fail_info = fail_info
        self.reason = reason
        self.transaction_id = transaction_id
        self.sender_nonce = sender_nonce
        self.signer_certificate = signer_certificate
        self.message_type = message_type


# The one answer to every request whose envelope or payload cannot be read:
# which step failed (key transport, content padding, the payload's syntax or
# signature) depends on secret data, so a client is never told.
UNREADABLE_TEXT = "the request could not be decrypted or read"


class Unreadable(ScepError):
    """The envelope did not open or its payload did not parse; `detail` is for the server log only."""

    def __init__(self, detail: str) -> None:
        super().__init__(FailInfo.BAD_MESSAGE_CHECK, UNREADABLE_TEXT)
        self.detail = detail
