"""Why an Intune call did not give an answer; each names itself for logs and metrics.

A validation that Intune *answered* with a non-Success code is not an error
here: it is a verdict (`client.Verdict`). These are the cases where no verdict
could be had, and every one of them fails an enrollment closed.
"""

from __future__ import annotations

import ssl


class IntuneError(Exception):
    """No usable answer from Intune. `code` is a short label for logs and metrics."""

    code = "error"
    request_id = ""  # the client-request-id of the last exchange, when there was one

    def __init__(self, message: str) -> None:
        super().__init__(message)


class IntuneAuthError(IntuneError):
    code = "auth"


class IntuneTransportError(IntuneError):
    """Connection refused or dropped, or a timeout."""

    code = "transport"

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"{action}: {message}")
        self.action = action


class IntuneServiceNotFound(IntuneError):
    """Graph discovery did not list the provider (no Intune licence, or a missing permission)."""

    code = "service_not_found"


class IntuneHttpError(IntuneError):
    """A non-2xx answer that retries did not cure."""

    def __init__(self, action: str, status: int, detail: str) -> None:
        super().__init__(f"{action}: HTTP {status} {detail}".strip())
        self.status = status
        self.code = f"http_{status}"


class IntuneBadResponse(IntuneError):
    """A 2xx answer that is not the JSON the contract promises."""

    code = "bad_response"


def transport_reason(e: BaseException) -> str:
    """What to tell an operator about a failed exchange: the exception's name, or, when TLS
    refused the server's certificate (a TLS-inspecting proxy whose root is not trusted, say),
    that, with OpenSSL's reason and the setting that fixes it."""
    seen: BaseException | None = e
    for _ in range(10):  # the cause chain, boundedly
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            reason = seen.verify_message or seen.reason or "certificate verify failed"
            return f"TLS certificate not trusted: {reason} (intune.ca_bundle names the roots to trust)"
        seen = seen.__cause__ or seen.__context__
    return type(e).__name__
