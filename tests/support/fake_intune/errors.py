"""Error bodies in the shapes each Microsoft service uses.

Entra's token endpoint answers OAuth2 errors with AADSTS codes; Graph and the
Intune front end wrap `{"error":{"code","message"}}`. Only Intune's 500 body is
observed (§3, issue #48); the rest follow the services' public conventions and
are [U]-grade, which is why they live in one place.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

from tests.support.fake_intune.model import Reply

GRAPH_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
)

_INTUNE_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}
_GRAPH_CODES = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "Authorization_RequestDenied",
    404: "Request_ResourceNotFound",
    405: "Request_BadRequest",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceNotAvailable",
}
_ENTRA_ERRORS = {  # status -> (error, AADSTS code, description)
    400: ("invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."),
    401: ("invalid_client", 7000215, "Invalid client secret provided."),
    403: ("unauthorized_client", 700016, "Application was not found in the directory."),
    429: ("temporarily_unavailable", 90056, "The request was throttled."),
    500: ("server_error", 90033, "A transient error has occurred. Please try again."),
    503: ("temporarily_unavailable", 90033, "A transient error has occurred. Please try again."),
}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def entra_error(status: int, error: str, aadsts: int, description: str) -> Reply:
    """An Entra v2 token-endpoint error, with the trace fields a real one carries."""
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    timestamp = _now()
    body = {
        "error": error,
        "error_description": (
            f"AADSTS{aadsts}: {description}\r\nTrace ID: {trace}\r\n"
            f"Correlation ID: {correlation}\r\nTimestamp: {timestamp}"
        ),
        "error_codes": [aadsts],
        "timestamp": timestamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={aadsts}",
    }
    return Reply(status, body, headers=[("x-ms-request-id", trace)])


def graph_error(status: int, code: str, message: str, client_request_id: str | None = None) -> Reply:
    """Microsoft Graph's error envelope (the 403 form for a missing Application.Read.All is [U], §2.2)."""
    request_id = str(uuid.uuid4())
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": client_request_id or request_id,
            },
        }
    }
    return Reply(status, body, headers=[("request-id", request_id)], content_type=GRAPH_CONTENT_TYPE)


def intune_error(status: int, message: str, code: str | None = None) -> Reply:
    """The Intune front end's envelope; for 500 the message is stringified server JSON as observed."""
    code = code or _INTUNE_CODES.get(status, "Error")
    if status >= 500 and not message.startswith("{"):
        message = json.dumps({"Message": message, "ActivityId": str(uuid.uuid4())})
    return Reply(status, {"error": {"code": code, "message": message}})


def default_fault_body(route: str, status: int) -> Reply:
    """The body a real service would plausibly send with `status` on `route`."""
    if route == "token":
        error, aadsts, description = _ENTRA_ERRORS.get(status, ("server_error", 90033, f"HTTP {status} (injected)."))
        return entra_error(status, error, aadsts, description)
    if route == "discovery":
        messages = {
            401: "Access token validation failure. Invalid audience.",
            403: "Insufficient privileges to complete the operation.",
            429: "Too many requests.",
        }
        return graph_error(
            status, _GRAPH_CODES.get(status, "UnknownError"), messages.get(status, f"HTTP {status} (injected).")
        )
    messages = {
        401: "The caller does not have the scep_challenge_provider role.",
        429: "Too many requests; retry later.",
        500: "An error has occurred.",
    }
    return intune_error(status, messages.get(status, f"HTTP {status} (injected)."))
