"""Certificate profiles: what a request may ask for and what the certificate gets.

Issue #2 needs only a simple default (client auth, one year); the shape is the
one later profile work (subject/SAN rules, user vs device) extends, and the
profile step of the enrollment chain is the only code that reads it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from scepd.enroll.pipeline import Enrollment, Issued, Next, Rejected
from scepd.scep.constants import FailInfo

KEY_USAGES = ("digital_signature", "key_encipherment", "key_agreement", "content_commitment")
_CURVE_BITS = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}


@dataclass(frozen=True)
class Profile:
    name: str = "default"
    validity: dt.timedelta = dt.timedelta(days=365)
    key_usage: frozenset[str] = frozenset({"digital_signature", "key_encipherment"})
    extended_key_usage: tuple[str, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string,)
    min_rsa_bits: int = 2048
    min_ec_bits: int = 256
    allowed_key_types: frozenset[str] = frozenset({"rsa", "ec"})
    allowed_csr_hashes: frozenset[str] = frozenset({"sha1", "sha256", "sha384", "sha512"})
    copy_san: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def check_request(self, csr: x509.CertificateSigningRequest) -> None:
        """Refuse a CSR this profile cannot issue for; raises Rejected."""
        key = csr.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            if "rsa" not in self.allowed_key_types:
                raise Rejected(FailInfo.BAD_ALG, "RSA keys are not allowed by the profile")
            if key.key_size < self.min_rsa_bits:
                raise Rejected(
                    FailInfo.BAD_ALG,
                    f"RSA key of {key.key_size} bits is below the profile minimum {self.min_rsa_bits}",
                )
        elif isinstance(key, ec.EllipticCurvePublicKey):
            bits = _CURVE_BITS.get(key.curve.name)
            if "ec" not in self.allowed_key_types or bits is None:
                raise Rejected(FailInfo.BAD_ALG, f"EC curve {key.curve.name} is not allowed")
            if bits < self.min_ec_bits:
                raise Rejected(FailInfo.BAD_ALG, f"EC key below {self.min_ec_bits} bits")
        else:
            raise Rejected(FailInfo.BAD_ALG, f"key type {type(key).__name__} is not allowed")
        hash_alg = csr.signature_hash_algorithm
        if hash_alg is None or hash_alg.name not in self.allowed_csr_hashes:
            name = hash_alg.name if hash_alg else "none"
            raise Rejected(FailInfo.BAD_ALG, f"CSR signature hash {name} is not allowed")

    def extensions(
        self, csr: x509.CertificateSigningRequest
    ) -> list[x509.Extension[x509.ExtensionType]]:
        """The end-entity extensions the profile grants (the issuer adds SKI/AKI)."""
        key = csr.public_key()
        usages = set(self.key_usage)
        if not isinstance(key, rsa.RSAPublicKey):
            usages.discard("key_encipherment")  # meaningless for EC keys
        exts: list[x509.Extension[x509.ExtensionType]] = [
            x509.Extension(
                x509.BasicConstraints.oid, True, x509.BasicConstraints(ca=False, path_length=None)
            ),
            x509.Extension(
                x509.KeyUsage.oid,
                True,
                x509.KeyUsage(
                    digital_signature="digital_signature" in usages,
                    content_commitment="content_commitment" in usages,
                    key_encipherment="key_encipherment" in usages,
                    data_encipherment=False,
                    key_agreement="key_agreement" in usages,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
            ),
        ]
        if self.extended_key_usage:
            exts.append(
                x509.Extension(
                    x509.ExtendedKeyUsage.oid,
                    False,
                    x509.ExtendedKeyUsage(
                        [x509.ObjectIdentifier(o) for o in self.extended_key_usage]
                    ),
                )
            )
        if self.copy_san:
            try:
                requested = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            except x509.ExtensionNotFound:
                pass
            else:
                # RFC 5280 4.2.1.6: critical when the subject is empty.
                exts.append(
                    x509.Extension(requested.oid, len(csr.subject) == 0, requested.value)
                )
        return exts


class ProfileStep:
    """The chain step that holds a request to its profile before anything is signed."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued:
        self.profile.check_request(enrollment.csr)
        enrollment.profile_name = self.profile.name
        return await next(enrollment)
