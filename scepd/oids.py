"""The object identifiers scepd reads and writes, by name: one table for the whole code base.

Dotted strings, as asn1crypto and `x509.ObjectIdentifier` take them; the
encoded form of one is `scepd.der.oid(name)`. Grouped by where they come
from (RFC 5652 CMS, PKCS #1, RFC 8894 SCEP), not by who uses them.
"""

from __future__ import annotations

# CMS content types (RFC 5652 section 4 onwards)
DATA = "1.2.840.113549.1.7.1"
SIGNED_DATA = "1.2.840.113549.1.7.2"
ENVELOPED_DATA = "1.2.840.113549.1.7.3"

# CMS and PKCS #9 attributes
CONTENT_TYPE = "1.2.840.113549.1.9.3"
MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
SIGNING_TIME = "1.2.840.113549.1.9.5"
COUNTERSIGNATURE = "1.2.840.113549.1.9.6"
SMIME_CAPABILITIES = "1.2.840.113549.1.9.15"
ENCRYPTION_KEY_PREFERENCE = "1.2.840.113549.1.9.16.2.11"
TIME_STAMP_TOKEN = "1.2.840.113549.1.9.16.2.14"
CMS_ALGORITHM_PROTECTION = "1.2.840.113549.1.9.52"
MS_NESTED_SIGNATURE = "1.3.6.1.4.1.311.2.4.1"
MS_COUNTERSIGNATURE = "1.3.6.1.4.1.311.3.3.1"

# RSA key transport (PKCS #1, RFC 8017)
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSAES_OAEP = "1.2.840.113549.1.1.7"
MGF1 = "1.2.840.113549.1.1.8"
P_SPECIFIED = "1.2.840.113549.1.1.9"

# Digest algorithms (RFC 5754, RFC 3279 for SHA-1), by scepd.keys.base.HashName value
DIGEST = {
    "sha1": "1.3.14.3.2.26",
    "sha224": "2.16.840.1.101.3.4.2.4",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}
# Signature algorithms for certificates and CRLs (RFC 4055, RFC 5758), by HashName value
RSA_WITH = {
    "sha1": "1.2.840.113549.1.1.5",
    "sha224": "1.2.840.113549.1.1.14",
    "sha256": "1.2.840.113549.1.1.11",
    "sha384": "1.2.840.113549.1.1.12",
    "sha512": "1.2.840.113549.1.1.13",
}
ECDSA_WITH = {
    "sha1": "1.2.840.10045.4.1",
    "sha224": "1.2.840.10045.4.3.1",
    "sha256": "1.2.840.10045.4.3.2",
    "sha384": "1.2.840.10045.4.3.3",
    "sha512": "1.2.840.10045.4.3.4",
}

# SCEP message attributes (RFC 8894 section 3.2.1), under id-VeriSign 2.16.840.1.113733.1.9
SCEP_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
SCEP_PKI_STATUS = "2.16.840.1.113733.1.9.3"
SCEP_FAIL_INFO = "2.16.840.1.113733.1.9.4"
SCEP_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
SCEP_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
SCEP_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
SCEP_FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"  # id-scep-failInfoText

# Content-encryption algorithms a SCEP envelope may use
AES128_CBC = "2.16.840.1.101.3.4.1.2"
AES192_CBC = "2.16.840.1.101.3.4.1.22"
AES256_CBC = "2.16.840.1.101.3.4.1.42"
DES_EDE3_CBC = "1.2.840.113549.3.7"
DES_CBC = "1.3.14.3.2.7"

# Certificate contents
EXTENSION_REQUEST = "1.2.840.113549.1.9.14"  # PKCS #9 extensionRequest, in a CSR
EKU_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
MS_UPN = "1.3.6.1.4.1.311.20.2.3"  # Microsoft userPrincipalName otherName
