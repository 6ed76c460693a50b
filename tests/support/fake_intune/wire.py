"""The Intune wire contract as the fake answers it (docs/intune-contract.md).

The fake keeps its own copy of these constants rather than importing scepd's,
so a typo on either side shows up as a failing test instead of agreeing with
itself.
"""

from __future__ import annotations

import enum

INTUNE_APP_ID = "0000000a-0000-0000-c000-000000000000"  # first-party "Microsoft Intune" (§2.1)
INTUNE_SP_OBJECT_ID = "3f1d8e0c-52b7-4b5e-9f3a-6c2f1a0b7d11"  # made up: the principal's object id (§2.1 $filter form)
GRAPH_RESOURCE = "https://graph.microsoft.com/"
INTUNE_RESOURCE = "https://api.manage.microsoft.com/"
INTUNE_API_APP_ID = "c161e42e-d4df-4a3d-9b42-e7a3c31f59d4"  # "Microsoft Intune API" (§1.2, [U]-grade)

SCEP_PROVIDER = "ScepRequestValidationFEService"
PKI_PROVIDER = "PkiConnectorFEService"
SCEP_PATH = "/RACerts/ScepRequestValidationFEService/Gateway/StatelessScepRequestValidationService"
PKI_PATH = "/RACerts/StatelessPkiConnectorService/Gateway/StatelessPkiConnectorService"

SCEP_API_VERSIONS = ("2018-02-20", "5019-05-05")  # EJBCA sends 5019-05-05 everywhere (§3)
PKI_API_VERSIONS = ("5019-05-05",)

GRAPH_ROLE = "Application.Read.All"
INTUNE_ROLE = "scep_challenge_provider"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

MAX_ERROR_DESCRIPTION = 255  # failureNotification (§5.2)
MAX_REVOCATION_BATCH = 500  # downloadParameters.maxRequests (§6.1)
REVOCATION_ODATA_CONTEXT = (
    "https://manage.microsoft.com/RACerts/StatelessPkiConnectorService/$metadata"
    "#Collection(microsoft.management.services.api.caRevocationRequest)"
)

# Routes, as fault injection and recording name them.
TOKEN = "token"
DISCOVERY = "discovery"
VALIDATE = "validate"
SUCCESS = "success"
FAILURE = "failure"
DOWNLOAD = "download"
UPLOAD = "upload"
ROUTES = (TOKEN, DISCOVERY, VALIDATE, SUCCESS, FAILURE, DOWNLOAD, UPLOAD)

SCEP_ACTIONS = {
    "ScepActions/validateRequest": VALIDATE,
    "ScepActions/successNotification": SUCCESS,
    "ScepActions/failureNotification": FAILURE,
}
PKI_ACTIONS = {
    "CertificateAuthorityRequests/downloadRevocationRequests": DOWNLOAD,
    "CertificateAuthorityRequests/uploadRevocationResults": UPLOAD,
}


class ScepCode(enum.Enum):
    """validateRequest / notification `code` values, in the libraries' enum order (§4)."""

    Unknown = "Unknown"
    Success = "Success"
    CertificateRequestDecodingFailed = "CertificateRequestDecodingFailed"
    ChallengePasswordMissing = "ChallengePasswordMissing"
    ChallengeDeserializationError = "ChallengeDeserializationError"
    ChallengeDecryptionError = "ChallengeDecryptionError"
    ChallengeDecodingError = "ChallengeDecodingError"
    ChallengeInvalidTimestamp = "ChallengeInvalidTimestamp"
    ChallengeExpired = "ChallengeExpired"
    SubjectNameMissing = "SubjectNameMissing"
    SubjectNameMismatch = "SubjectNameMismatch"
    SubjectAltNameMissing = "SubjectAltNameMissing"
    SubjectAltNameMismatch = "SubjectAltNameMismatch"
    KeyUsageMismatch = "KeyUsageMismatch"
    KeyLengthMismatch = "KeyLengthMismatch"
    EnhancedKeyUsageMissing = "EnhancedKeyUsageMissing"
    EnhancedKeyUsageMismatch = "EnhancedKeyUsageMismatch"
    AadKeyIdentifierListMissing = "AadKeyIdentifierListMissing"
    RegisteredKeyMismatch = "RegisteredKeyMismatch"
    SigningCertThumbprintMismatch = "SigningCertThumbprintMismatch"
    ScepProfileNoLongerTargetedToTheClient = "ScepProfileNoLongerTargetedToTheClient"
    SignatureValidationFailed = "SignatureValidationFailed"
    BadCertificateRequestIdInChallenge = "BadCertificateRequestIdInChallenge"
    BadDeviceIdInChallenge = "BadDeviceIdInChallenge"
    BadUserIdInChallenge = "BadUserIdInChallenge"


class RevocationCode(enum.IntEnum):
    """uploadRevocationResults errorCode (§6.2): the names are the C# wire form."""

    None_ = 0
    NonRetryableServiceException = 4000
    DataSerializationError = 4001
    ParameterDataInvalidError = 4002
    CryptographyError = 4003
    CertificateNotFoundError = 4004
    ConflictError = 4005
    NotSupportedError = 4006
    PayloadTooLargeError = 4007
    RetryableServiceException = 4100
    ServiceUnavailableException = 4101
    ServiceTooBusyException = 4102
    AuthenticationException = 4103

    @property
    def wire_name(self) -> str:
        return "None" if self is RevocationCode.None_ else self.name

    @property
    def retryable(self) -> bool:
        return self >= 4100

    @classmethod
    def parse(cls, value: object) -> RevocationCode:
        """Accept what Newtonsoft's StringEnumConverter accepts: a name (any case), a
        numeric string (Java/Gson) or a bare integer. Raises ValueError otherwise."""
        if isinstance(value, bool):
            raise ValueError(f"errorCode {value!r} is not a code")  # noqa: TRY004 - callers expect ValueError
        if isinstance(value, int):
            return cls(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"errorCode {value!r} is not a code")
        text = value.strip()
        if text.lstrip("-").isdigit():
            return cls(int(text))
        for code in cls:
            if code.wire_name.lower() == text.lower():
                return code
        raise ValueError(f"errorCode {value!r} is not a known code")
