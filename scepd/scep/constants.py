"""SCEP protocol constants (RFC 8894 section 3.2.1 and 3.5)."""

from __future__ import annotations

import enum


class MessageType(str, enum.Enum):
    """messageType values; the wire form is the decimal string (PrintableString)."""

    CERT_REP = "3"
    RENEWAL_REQ = "17"
    PKCS_REQ = "19"
    CERT_POLL = "20"  # GetCertInitial in draft terms
    GET_CERT = "21"
    GET_CRL = "22"


class PkiStatus(str, enum.Enum):
    SUCCESS = "0"
    FAILURE = "2"
    PENDING = "3"


class FailInfo(str, enum.Enum):
    BAD_ALG = "0"
    BAD_MESSAGE_CHECK = "1"
    BAD_REQUEST = "2"
    BAD_TIME = "3"
    BAD_CERT_ID = "4"


# The message attributes' OIDs are in scepd.oids (SCEP_*).
CONTENT_TYPE_CA_CERT = "application/x-x509-ca-cert"
CONTENT_TYPE_CA_RA_CERT = "application/x-x509-ca-ra-cert"
CONTENT_TYPE_NEXT_CA_CERT = "application/x-x509-next-ca-cert"
CONTENT_TYPE_NEXT_CA_CERT = "application/x-x509-next-ca-cert"
CONTENT_TYPE_PKI_MESSAGE = "application/x-pki-message"
CONTENT_TYPE_CAPS = "text/plain"
