"""The constants of the Intune wire contract, named once (docs/intune-contract.md)."""

from __future__ import annotations

import enum

INTUNE_APP_ID = "0000000a-0000-0000-c000-000000000000"  # the first-party "Microsoft Intune" principal (§2.1)
DEFAULT_AUTHORITY = "https://login.microsoftonline.com/"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com/"
DEFAULT_INTUNE_RESOURCE_URL = "https://api.manage.microsoft.com/"

SCEP_PROVIDER = "ScepRequestValidationFEService"
PKI_PROVIDER = "PkiConnectorFEService"
SCEP_API_VERSION = "2018-02-20"
PKI_API_VERSION = "5019-05-05"  # sic: year 5019, as Microsoft's own clients send (§3)

VALIDATE = "ScepActions/validateRequest"
SUCCESS_NOTIFICATION = "ScepActions/successNotification"
FAILURE_NOTIFICATION = "ScepActions/failureNotification"
DOWNLOAD_REVOCATIONS = "CertificateAuthorityRequests/downloadRevocationRequests"
UPLOAD_REVOCATIONS = "CertificateAuthorityRequests/uploadRevocationResults"

SUCCESS_CODE = "Success"  # matched exactly and case-sensitively (§4)
MAX_ERROR_DESCRIPTION = 255  # failureNotification errorDescription limit (§5.2)
MAX_REVOCATION_BATCH = 500  # downloadParameters.maxRequests upper bound (§6.1)

# HRESULTs for failureNotification, shown to the admin in the Intune console (§5.2).
HRESULT_POLICY_REFUSED = 0x80070057  # E_INVALIDARG: the request broke the CA's profile
HRESULT_CA_FAILURE = 0x80004005  # E_FAIL: the CA itself failed (token, store)


def scope(resource_url: str) -> str:
    """`resource + "/.default"`: for the Intune resource this gives the double slash
    Microsoft's clients send (`https://api.manage.microsoft.com//.default`, §1.2)."""
    return resource_url + "/.default"


class RevocationErrorCode(enum.IntEnum):
    """uploadRevocationResults errorCode values (§6.2); sent as enum names."""

    NONE = 0
    NON_RETRYABLE_SERVICE_EXCEPTION = 4000
    DATA_SERIALIZATION_ERROR = 4001
    PARAMETER_DATA_INVALID_ERROR = 4002
    CRYPTOGRAPHY_ERROR = 4003
    CERTIFICATE_NOT_FOUND_ERROR = 4004
    CONFLICT_ERROR = 4005
    NOT_SUPPORTED_ERROR = 4006
    PAYLOAD_TOO_LARGE_ERROR = 4007
    RETRYABLE_SERVICE_EXCEPTION = 4100
    SERVICE_UNAVAILABLE_EXCEPTION = 4101
    SERVICE_TOO_BUSY_EXCEPTION = 4102
    AUTHENTICATION_EXCEPTION = 4103

    @property
    def wire_name(self) -> str:
        """The C# client's StringEnumConverter form, e.g. `CertificateNotFoundError`."""
        return "".join(word.capitalize() for word in self.name.split("_"))
