"""The sans-IO SCEP (RFC 8894) codec: bytes in, objects out, and back.

Nothing here opens a socket, reads the clock or holds a private key: the
operations that need the RA/CA key are split in two (the codec yields the
bytes to sign, or the envelope to unwrap) with async helpers that take a
`scepd.keys.base.Signer` / `Decrypter`.
"""

from scepd.scep.caps import caps_text
from scepd.scep.certrep import CertRepDraft, build_cert_rep, sign_cert_rep
from scepd.scep.certs_only import build_certs_only, parse_certs_only
from scepd.scep.ciphers import ContentCipher
from scepd.scep.csr import CsrRead, read_csr
from scepd.scep.envelope import Envelope, Opened, build_envelope, open_envelope, parse_envelope, unseal
from scepd.scep.errors import UNREADABLE_TEXT, MalformedMessage, ScepError, Unreadable
from scepd.scep.message import (
    PkiMessage,
    parse_issuer_and_serial,
    parse_issuer_and_subject,
    parse_pki_message,
)
from scepd.scep.next_ca import build_next_ca_cert, sign_next_ca_cert

__all__ = [
    "CertRepDraft",
    "CsrRead",
    "Opened",
    "UNREADABLE_TEXT",
    "Unreadable",
    "read_csr",
    "unseal",
    "ContentCipher",
    "Envelope",
    "MalformedMessage",
    "PkiMessage",
    "ScepError",
    "build_cert_rep",
    "build_certs_only",
    "build_envelope",
    "build_next_ca_cert",
    "caps_text",
    "open_envelope",
    "parse_certs_only",
    "parse_envelope",
    "parse_issuer_and_serial",
    "parse_issuer_and_subject",
    "parse_pki_message",
    "sign_cert_rep",
    "sign_next_ca_cert",
]
