"""Entra ID's v2 token endpoint, client-credentials grant only (§1).

AADSTS codes are the real ones where they are well known (90002 tenant,
700016 app, 7000215 secret, 7000216 no credential, 700027 certificate or
signature, 700024 time range, 700021 issuer, 70003 grant, 1002012 and 500011
scope, 900144 missing parameter); for a wrong assertion audience the fake
uses 50027 "invalid JWT", a guess.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.fake_intune import wire
from tests.support.fake_intune.errors import entra_error
from tests.support.fake_intune.model import Reply, Request
from tests.support.fake_intune.state import Audience, FakeIntune, IssuedToken

IGNORED_SCOPES = {"openid", "profile", "offline_access"}
ASSERTION_SKEW = 300.0  # seconds of clock skew Entra tolerates on nbf/exp
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


class Rejected(Exception):
    """The request is refused with this Entra error."""

    def __init__(self, status: int, error: str, aadsts: int, description: str) -> None:
        super().__init__(description)
        self.reply = entra_error(status, error, aadsts, description)


def parse_form(request: Request) -> dict[str, str]:
    """The form's first value per name; blank values kept, so an empty secret is seen as given."""
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise Rejected(
            400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."
        )
    try:
        fields = parse_qs(request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as e:
        raise Rejected(400, "invalid_request", 900144, "The request body is not UTF-8.") from e
    return {name: values[0] for name, values in fields.items()}


def _audience_for(fake: FakeIntune, scope: str) -> Audience:
    """Which audience a `resource/.default` scope asks for.

    Besides the real resource names (and Intune's single- and double-slash
    forms, §1.2), the fake's own URL counts as Graph: a client pointed at the
    fake derives its Graph scope from its graph_url.
    """
    resources = [s for s in scope.split() if s and s not in IGNORED_SCOPES]
    if not resources:
        raise Rejected(400, "invalid_scope", 70011, "The provided value for the input parameter 'scope' is not valid.")
    if len(resources) > 1:
        raise Rejected(
            400,
            "invalid_scope",
            70011,
            f"The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid: "
            "a client credentials request names exactly one resource.",
        )
    resource = resources[0]
    if not resource.endswith("/.default"):
        raise Rejected(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {resource} is not valid. Client credential flows must have a scope "
            "value with /.default suffixed to the resource identifier (application ID URI).",
        )
    name = resource[: -len("/.default")].rstrip("/")
    graph = {"https://graph.microsoft.com", GRAPH_APP_ID}
    if fake.base_url is not None:
        graph.add(fake.base_url.rstrip("/"))
    if name in graph:
        return "graph"
    if name in {wire.INTUNE_RESOURCE.rstrip("/"), wire.INTUNE_API_APP_ID}:
        return "intune"
    raise Rejected(
        400,
        "invalid_scope",
        500011,
        f"The resource principal named {name} was not found in the tenant named {fake.tenant}. This can happen if "
        "the application has not been installed by the administrator of the tenant.",
    )


def _b64url_json(part: str) -> dict[str, object]:
    try:
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError) as e:
        raise Rejected(400, "invalid_request", 50027, "JWT token is invalid or malformed.") from e
    if not isinstance(value, dict):
        raise Rejected(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
    return value


def verify_assertion(fake: FakeIntune, assertion: str, client_id: str, token_url: str) -> None:
    """Check an RS256 or PS256 client assertion as Entra does (§1.1). Validity is judged on real
    wall time, not the fake's advanced clock: it is the client's clock against Entra's."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise Rejected(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
    header, claims = _b64url_json(parts[0]), _b64url_json(parts[1])
    # Entra recommends PS256 with x5t#S256 now; RS256 with x5t is still accepted (§1.1).
    if header.get("alg") not in ("RS256", "PS256"):
        raise Rejected(
            401, "invalid_client", 700027, f"Client assertion contains an unsupported algorithm {header.get('alg')!r}."
        )
    x5t, x5t_s256 = header.get("x5t"), header.get("x5t#S256")
    certificate = fake.client_certificate(
        x5t if isinstance(x5t, str) else None, x5t_s256 if isinstance(x5t_s256, str) else None
    )
    if certificate is None:
        raise Rejected(
            401,
            "invalid_client",
            700027,
            "The certificate with identifier used to sign the client assertion is not registered on application. "
            f"[Reason - The key was not found., Thumbprint of key used by client: '{x5t}']",
        )
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Rejected(401, "invalid_client", 700027, "Client assertion failed signature validation.")
    try:
        signature = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
        scheme: padding.AsymmetricPadding = (
            # RFC 7518 §3.5: MGF1 with SHA-256 and a salt as long as the digest.
            padding.PSS(padding.MGF1(hashes.SHA256()), salt_length=32)
            if header["alg"] == "PS256"
            else padding.PKCS1v15()
        )
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"), scheme, hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError, UnicodeEncodeError) as e:
        raise Rejected(401, "invalid_client", 700027, "Client assertion failed signature validation.") from e
    now = time.time()
    if not certificate.not_valid_before_utc.timestamp() <= now <= certificate.not_valid_after_utc.timestamp():
        raise Rejected(
            401,
            "invalid_client",
            700027,
            "Client assertion contains an invalid signature. [Reason - The key used is expired.]",
        )
    if claims.get("aud") != token_url:
        raise Rejected(
            401,
            "invalid_client",
            50027,
            f"Invalid JWT token. The audience claim {claims.get('aud')!r} is not the token endpoint {token_url!r}.",
        )
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise Rejected(
            401,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        )
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise Rejected(400, "invalid_request", 50027, "JWT token is invalid or malformed: no jti claim.")
    nbf, exp = claims.get("nbf"), claims.get("exp")
    if (
        not isinstance(exp, int | float)
        or isinstance(exp, bool)
        or (nbf is not None and not isinstance(nbf, int | float))
    ):
        raise Rejected(400, "invalid_request", 50027, "JWT token is invalid or malformed: nbf/exp are not numbers.")
    if now + ASSERTION_SKEW < (nbf or 0) or now - ASSERTION_SKEW >= exp:
        raise Rejected(
            401,
            "invalid_client",
            700024,
            f"Client assertion is not within its valid time range. Current time: {int(now)}, assertion valid from "
            f"{nbf}, expiry time of assertion {exp}.",
        )


def token(fake: FakeIntune, request: Request, tenant: str) -> Reply:
    """POST /{tenant}/oauth2/v2.0/token."""
    try:
        return _token(fake, request, tenant)
    except Rejected as e:
        return e.reply


def _token(fake: FakeIntune, request: Request, tenant: str) -> Reply:
    if tenant.lower() not in (fake.tenant.lower(), fake.tenant_id.lower()):
        raise Rejected(
            400,
            "invalid_request",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
            "the correct cloud.",
        )
    form = parse_form(request)
    for name in ("grant_type", "client_id", "scope"):
        if not form.get(name):
            raise Rejected(
                400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
            )
    if form["grant_type"] != "client_credentials":
        raise Rejected(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
    client_id = form["client_id"]
    if client_id.lower() != fake.client_id.lower():
        raise Rejected(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory '{tenant}'.",
        )
    if "client_assertion" in form:
        if form.get("client_assertion_type") != wire.JWT_BEARER:
            raise Rejected(400, "invalid_request", 50027, "client_assertion_type must be " + wire.JWT_BEARER + ".")
        token_url = f"{fake.base_url}/{tenant}/oauth2/v2.0/token"
        verify_assertion(fake, form["client_assertion"], fake.client_id, token_url)
    elif "client_secret" in form:
        if fake.client_secret is None or not hmac.compare_digest(
            form["client_secret"].encode(), fake.client_secret.encode()
        ):
            raise Rejected(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                f"value, not the client secret ID, for a secret added to app '{fake.client_id}'.",
            )
    else:
        raise Rejected(
            401,
            "invalid_client",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        )
    issued = fake.issue_token(_audience_for(fake, form["scope"]))
    lifetime = max(0, round(issued.expires_at - fake.now()))
    body = {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": issued.value}
    return Reply(200, body, headers=[("cache-control", "no-store, no-cache"), ("pragma", "no-cache")])


def bearer(fake: FakeIntune, request: Request) -> tuple[IssuedToken | None, str]:
    """The token behind `Authorization: Bearer ...`, or None and why not."""
    header = request.header("authorization") or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None, "Access token is empty."
    with fake.lock:
        issued = fake.state.tokens.get(value.strip())
        now = fake.now()
    if issued is None:
        return None, "Access token validation failure. Invalid token."
    if now >= issued.expires_at:
        return None, "Lifetime validation failed, the token is expired."
    return issued, ""
