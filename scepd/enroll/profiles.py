"""Certificate profiles: what a request may ask for and what the certificate gets.

A profile is chosen per endpoint. It decides the certificate type (user or
device, recorded and audited), which subject attributes and subjectAltName
forms a CSR may carry and what the profile imposes instead (a fixed subject
suffix), the key types, sizes and CSR signature hashes it accepts, and what it
grants (key usage, EKU, validity). A CSR that asks for a name the profile does
not allow is refused (badRequest) or, with `on_disallowed = "trim"`, issued
without that name; a key or hash the profile does not allow is always refused
(badAlg). Key usage, EKU and basic constraints requested in a CSR are ignored:
the profile imposes them. The profile step of the enrollment chain is the only
code that reads a profile.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scepd import oids
from scepd.enroll.pipeline import Enrollment, Issued, Next, Pending, Rejected
from scepd.scep.constants import FailInfo

KEY_USAGES = ("digital_signature", "key_encipherment", "key_agreement", "content_commitment")
KEY_TYPES = ("rsa", "ec")
CSR_HASHES = ("sha1", "sha224", "sha256", "sha384", "sha512")
CERT_TYPES = ("device", "user")
ON_DISALLOWED = ("refuse", "trim")
SAN_FORMS = ("dns", "email", "upn", "uri", "ip")
OID_UPN = x509.ObjectIdentifier(oids.MS_UPN)  # Microsoft userPrincipalName otherName
INTUNE_SID_URI_PREFIX = "tag:microsoft.com,2022-09-14:sid:"  # Intune's strong-mapping SID URI
_CURVE_BITS = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}

# Subject attributes by the short names the configuration uses (RFC 4514 and common practice).
SUBJECT_ATTRIBUTES: dict[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "E": NameOID.EMAIL_ADDRESS,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "STREET": NameOID.STREET_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "GN": NameOID.GIVEN_NAME,
    "SN": NameOID.SURNAME,
    "T": NameOID.TITLE,
}
_ATTRIBUTE_NAMES = {oid: short for short, oid in SUBJECT_ATTRIBUTES.items()}


def san_form(name: x509.GeneralName) -> str:
    """The configuration's word for a subjectAltName entry ("other" for forms no profile accepts)."""
    if isinstance(name, x509.DNSName):
        return "dns"
    if isinstance(name, x509.RFC822Name):
        return "email"
    if isinstance(name, x509.UniformResourceIdentifier):
        return "uri"
    if isinstance(name, x509.IPAddress):
        return "ip"
    if isinstance(name, x509.OtherName) and name.type_id == OID_UPN:
        return "upn"
    return "other"


def _describe(name: x509.GeneralName) -> str:
    form = san_form(name)
    if form == "upn":
        value = "(UPN)"
    elif form == "other":
        value = type(name).__name__
    else:
        value = str(name.value)
    return f"{form}:{value[:80]}"


@dataclass(frozen=True)
class Profile:
    name: str = "default"
    certificate_type: str = "device"  # "user" or "device": recorded in the audit trail
    validity: dt.timedelta = dt.timedelta(days=365)
    key_usage: frozenset[str] = frozenset({"digital_signature", "key_encipherment"})
    extended_key_usage: tuple[str, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string,)
    min_rsa_bits: int = 2048
    min_ec_bits: int = 256
    allowed_key_types: frozenset[str] = frozenset({"rsa", "ec"})
    allowed_csr_hashes: frozenset[str] = frozenset({"sha1", "sha224", "sha256", "sha384", "sha512"})
    copy_san: bool = True
    # Subject attributes accepted from the CSR, by short name; None accepts any.
    subject_accept: frozenset[str] | None = None
    # Imposed attributes, RFC 4514 ("O=Example,C=DE"): the most significant part of every
    # subject; they replace CSR attributes of the same types.
    subject_suffix: str = ""
    san_accept: frozenset[str] = frozenset(SAN_FORMS)
    san_uri_prefixes: tuple[str, ...] = ()  # when set, a URI must start with one of these
    san_dns_suffixes: tuple[str, ...] = ()  # when set, a DNS name must be one of these or below one
    on_disallowed: str = "refuse"  # or "trim": drop disallowed names instead of refusing
    revoke_superseded: bool = False  # a renewal also revokes the old certificate (reason superseded)
    approval: bool = False  # hold requests (PENDING) until `scepd pending approve`
    pending_ttl: dt.timedelta = dt.timedelta(hours=72)
    extra: dict[str, str] = field(default_factory=dict)

    # -- what the request may ask for ------------------------------------------

    def check_request(self, csr: x509.CertificateSigningRequest) -> None:
        """Refuse a CSR this profile cannot issue for; raises Rejected."""
        self._check_key(csr)
        hash_alg = csr.signature_hash_algorithm
        if hash_alg is None or hash_alg.name not in self.allowed_csr_hashes:
            name = hash_alg.name if hash_alg else "none"
            raise Rejected(
                FailInfo.BAD_ALG,
                f"CSR signature hash {name} is not allowed by profile {self.name!r}"
                f" (allowed: {', '.join(sorted(self.allowed_csr_hashes))})",
            )
        subject = self.subject(csr)  # raises for a disallowed attribute in refuse mode
        sans = self.subject_alt_names(csr)
        if len(subject) == 0 and not sans:
            raise Rejected(
                FailInfo.BAD_REQUEST,
                f"the request names no subject or subjectAltName that profile {self.name!r} accepts",
            )

    def _check_key(self, csr: x509.CertificateSigningRequest) -> None:
        key = csr.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            if "rsa" not in self.allowed_key_types:
                raise Rejected(FailInfo.BAD_ALG, f"RSA keys are not allowed by profile {self.name!r}")
            if key.key_size < self.min_rsa_bits:
                raise Rejected(
                    FailInfo.BAD_ALG,
                    f"RSA key of {key.key_size} bits is below the profile minimum {self.min_rsa_bits}",
                )
        elif isinstance(key, ec.EllipticCurvePublicKey):
            bits = _CURVE_BITS.get(key.curve.name)
            if "ec" not in self.allowed_key_types:
                raise Rejected(FailInfo.BAD_ALG, f"EC keys are not allowed by profile {self.name!r}")
            if bits is None:
                raise Rejected(FailInfo.BAD_ALG, f"EC curve {key.curve.name} is not allowed")
            if bits < self.min_ec_bits:
                raise Rejected(
                    FailInfo.BAD_ALG, f"EC key of {bits} bits is below the profile minimum {self.min_ec_bits}"
                )
        else:
            raise Rejected(FailInfo.BAD_ALG, f"key type {type(key).__name__} is not allowed")

    def _disallowed(self, what: str) -> None:
        """A name the profile does not accept: refuse, unless the profile trims."""
        if self.on_disallowed != "trim":
            raise Rejected(FailInfo.BAD_REQUEST, f"{what} is not allowed by profile {self.name!r}")

    # -- what the certificate gets -------------------------------------------

    def subject(self, csr: x509.CertificateSigningRequest) -> x509.Name:
        """The issued subject: the CSR's accepted attributes under the imposed suffix.

        Raises Rejected (refuse mode) for an attribute the profile does not accept.
        """
        suffix = x509.Name.from_rfc4514_string(self.subject_suffix) if self.subject_suffix else x509.Name([])
        imposed = {attr.oid for attr in suffix}
        rdns: list[x509.RelativeDistinguishedName] = list(suffix.rdns)
        for rdn in csr.subject.rdns:
            kept = []
            for attr in rdn:
                if attr.oid in imposed:
                    continue  # the profile's value wins
                short = _ATTRIBUTE_NAMES.get(attr.oid, attr.oid.dotted_string)
                if self.subject_accept is not None and short not in self.subject_accept:
                    self._disallowed(f"subject attribute {short}")
                    continue
                kept.append(attr)
            if kept:
                rdns.append(x509.RelativeDistinguishedName(kept))
        return x509.Name(rdns)

    def subject_alt_names(self, csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
        """The CSR's subjectAltName entries this profile accepts, in request order.

        Raises Rejected (refuse mode) for an entry the profile does not accept.
        """
        try:
            requested = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        kept: list[x509.GeneralName] = []
        for name in requested:
            if not self.copy_san:
                continue  # copying is off: the certificate gets no SAN, whatever was asked
            if self._san_allowed(name):
                kept.append(name)
            else:
                self._disallowed(f"subjectAltName {_describe(name)}")
        return kept

    def _san_allowed(self, name: x509.GeneralName) -> bool:
        form = san_form(name)
        if form not in self.san_accept:
            return False
        if form == "uri" and self.san_uri_prefixes:
            return any(str(name.value).startswith(p) for p in self.san_uri_prefixes)
        if form == "dns" and self.san_dns_suffixes:
            host = str(name.value).lower().rstrip(".")
            return any(host == s or host.endswith("." + s) for s in self.san_dns_suffixes)
        if form == "ip":
            return isinstance(name.value, (ipaddress.IPv4Address, ipaddress.IPv6Address))
        return True

    def extensions(self, csr: x509.CertificateSigningRequest) -> list[x509.Extension[x509.ExtensionType]]:
        """The end-entity extensions the profile grants (the issuer adds SKI/AKI)."""
        key = csr.public_key()
        usages = set(self.key_usage)
        if not isinstance(key, rsa.RSAPublicKey):
            usages.discard("key_encipherment")  # meaningless for EC keys
        exts: list[x509.Extension[x509.ExtensionType]] = [
            x509.Extension(x509.BasicConstraints.oid, True, x509.BasicConstraints(ca=False, path_length=None)),
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
                    x509.ExtendedKeyUsage([x509.ObjectIdentifier(o) for o in self.extended_key_usage]),
                )
            )
        sans = self.subject_alt_names(csr)
        if sans:
            # RFC 5280 4.2.1.6: critical when the subject is empty.
            exts.append(
                x509.Extension(
                    x509.SubjectAlternativeName.oid,
                    len(self.subject(csr)) == 0,
                    x509.SubjectAlternativeName(sans),
                )
            )
        return exts


class ProfileStep:
    """The chain step that holds a request to its profile before anything is signed.

    It only decides: it hands on the enrollment with the profile's name and
    certificate type filled in, or refuses it. A renewal (the renewal step set
    `renewal_of`) must keep the subject of the certificate it renews; what
    becomes of the renewed certificate is written by `SupersedeRenewed`, a
    store step further down. A refusal or a hold from here on names the
    profile, so the answer is counted under it.
    """

    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued:
        try:
            self.profile.check_request(enrollment.csr)
            if enrollment.renewal_of is not None:
                old = enrollment.signer_certificate.subject.rfc4514_string()
                new = self.profile.subject(enrollment.csr).rfc4514_string()
                if old != new:
                    raise Rejected(
                        FailInfo.BAD_REQUEST, f"a renewal must keep the subject {old!r}; the request asks for {new!r}"
                    )
            profiled = replace(
                enrollment, profile_name=self.profile.name, certificate_type=self.profile.certificate_type
            )
            return await next(profiled)
        except (Rejected, Pending) as e:
            if e.profile is not None:
                raise
            raise e.in_profile(self.profile.name) from e
