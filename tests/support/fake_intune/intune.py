"""The Intune front end: ScepActions (§4, §5) and the PKI connector (§6).

Checks run in the order a gateway would apply them: token (401), api-version
and client-request-id (400), content type (415), body shape (400). A
well-formed SCEP action always answers HTTP 200 with `code` and
`errorDescription`; malformed bodies get a JSON 400, which the real service's
shape for is [U] (§11). Property names must be the contract's camelCase ones, and
unknown properties are refused with 400, as Microsoft's move of both clients to
camelCase suggests the service requires [I].
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time

from cryptography import x509

from tests.support.fake_intune import csr as csrmod
from tests.support.fake_intune import wire
from tests.support.fake_intune.entra import bearer
from tests.support.fake_intune.errors import intune_error
from tests.support.fake_intune.model import Challenge, Json, Notification, Reply, Request, RevocationResult
from tests.support.fake_intune.state import FakeIntune
from tests.support.fake_intune.wire import RevocationCode, ScepCode

BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
THUMBPRINT = re.compile(r"[0-9A-Fa-f]{40}")  # SHA-1; hex case unspecified (§5.1)
SERIAL = re.compile(r"[0-9A-Fa-f]+")  # hex, or decimal (a subset): the format is [U] (§5.1)
HRESULT_MIN, HRESULT_MAX = -(2**31), 2**32 - 1  # a 32-bit HRESULT read signed or unsigned (§5.2)


class BadRequest(Exception):
    """A malformed body: answered 400 with the Intune error envelope."""


def _get(obj: dict[str, Json], name: str) -> tuple[bool, Json]:
    if name in obj:
        return True, obj[name]
    return False, None


def _only(obj: dict[str, Json], allowed: frozenset[str], where: str) -> None:
    """camelCase names from the contract and nothing else (§6.2: Microsoft moved both clients
    to camelCase because the service needs it [I]; unknown members are refused [I])."""
    for key in obj:
        if key not in allowed:
            near = next((a for a in allowed if a.lower() == key.lower()), None)
            hint = f"; the property is '{near}' (camelCase)" if near else ""
            raise BadRequest(f"Unknown property '{key}' in '{where}'{hint}.")


VALIDATE_FIELDS = frozenset({"transactionId", "certificateRequest", "callerInfo"})
SUCCESS_FIELDS = frozenset(
    {
        "transactionId",
        "certificateRequest",
        "certificateThumbprint",
        "certificateSerialNumber",
        "certificateExpirationDateUtc",
        "issuingCertificateAuthority",
        "callerInfo",
        "caConfiguration",
        "certificateAuthority",
    }
)
FAILURE_FIELDS = frozenset({"transactionId", "certificateRequest", "hResult", "errorDescription", "callerInfo"})
DOWNLOAD_FIELDS = frozenset({"maxRequests", "issuerName"})
RESULT_FIELDS = frozenset({"requestContext", "succeeded", "errorCode", "errorMessage"})


def _object(obj: dict[str, Json], name: str) -> dict[str, Json]:
    _, value = _get(obj, name)
    if not isinstance(value, dict):
        raise BadRequest(f"The request body must contain an object '{name}'.")
    return value


def _string(obj: dict[str, Json], name: str) -> str:
    _, value = _get(obj, name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{name}' is required and must be a non-empty string.")
    return value


def _optional_string(obj: dict[str, Json], name: str) -> str | None:
    _, value = _get(obj, name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string or null.")
    return value


def check_envelope(fake: FakeIntune, request: Request, versions: tuple[str, ...]) -> dict[str, Json] | Reply:
    """The common envelope of §3; the parsed body, or the error reply."""
    token, why = bearer(fake, request)
    if token is None:
        return intune_error(401, why)
    if token.audience != "intune":
        return intune_error(
            401, "The access token's audience is not the Intune API (https://api.manage.microsoft.com/)."
        )
    if wire.INTUNE_ROLE not in token.roles:
        return intune_error(401, f"The caller does not have the {wire.INTUNE_ROLE} role.")
    version = request.header("api-version")
    if version is None:
        return intune_error(400, "The api-version header is required.")
    if version not in versions:
        return intune_error(400, f"The api-version '{version}' is not supported; supported: {', '.join(versions)}.")
    if not (request.header("client-request-id") or "").strip():
        return intune_error(400, "The client-request-id header is required.")
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return intune_error(415, f"Content-Type {request.header('content-type')!r} is not application/json.")
    try:
        body = json.loads(request.body)
    except (UnicodeDecodeError, ValueError):
        return intune_error(400, "The request body is not JSON.")
    if not isinstance(body, dict):
        return intune_error(400, "The request body is not a JSON object.")
    return body


def _echo(request: Request, reply: Reply) -> Reply:
    reply.headers.append(("client-request-id", request.header("client-request-id") or ""))
    return reply


def scep_action(fake: FakeIntune, request: Request, route: str) -> Reply:
    """POST <ScepRequestValidationFEService uri>/ScepActions/{validateRequest,successNotification,failureNotification}."""
    body = check_envelope(fake, request, wire.SCEP_API_VERSIONS)
    if isinstance(body, Reply):
        return _echo(request, body)
    try:
        if route == wire.VALIDATE:
            _only(body, frozenset({"request"}), "body")
            code, text = validate(fake, _object(body, "request"))
        else:
            _only(body, frozenset({"notification"}), "body")
            code, text = notify(fake, _object(body, "notification"), route)
    except BadRequest as e:
        return _echo(request, intune_error(400, str(e)))
    return _echo(request, Reply(200, {"code": code, "errorDescription": text}))


def pki_action(fake: FakeIntune, request: Request, route: str) -> Reply:
    """POST <PkiConnectorFEService uri>/CertificateAuthorityRequests/{download,upload}..."""
    body = check_envelope(fake, request, wire.PKI_API_VERSIONS)
    if isinstance(body, Reply):
        return _echo(request, body)
    try:
        _only(body, frozenset({"downloadParameters" if route == wire.DOWNLOAD else "results"}), "body")
        answer = download(fake, _object(body, "downloadParameters")) if route == wire.DOWNLOAD else upload(fake, body)
    except BadRequest as e:
        return _echo(request, intune_error(400, str(e)))
    return _echo(request, Reply(200, answer))


# -- validateRequest ---------------------------------------------------------------------


def validate(fake: FakeIntune, request: dict[str, Json]) -> tuple[str, str]:
    _only(request, VALIDATE_FIELDS, "request")
    transaction = _string(request, "transactionId")
    _optional_string(request, "callerInfo")
    _, text = _get(request, "certificateRequest")
    if not isinstance(text, str):
        raise BadRequest("'certificateRequest' is required and must be a string.")
    try:
        read = csrmod.read_csr(text)
    except csrmod.CsrDecodeError as e:
        return ScepCode.CertificateRequestDecodingFailed.value, str(e)
    if not read.signature_valid:
        # [U] which code Intune gives a CSR whose self-signature fails; the signature code fits best.
        return ScepCode.SignatureValidationFailed.value, "The certificate request's signature does not verify."
    csr, der, password = read.csr, read.der, read.password
    if password is None:
        return ScepCode.ChallengePasswordMissing.value, "The certificate request has no challengePassword attribute."
    if not BASE64URL.fullmatch(password) or len(password) % 4 == 1:
        return ScepCode.ChallengeDecodingError.value, "The challenge is not a base64url blob."
    with fake.lock:
        challenge = fake.state.challenges.get(password)
        if challenge is None:
            # Well-formed but not minted here: the real service could not decrypt it.
            return ScepCode.ChallengeDecryptionError.value, "The challenge could not be decrypted."
        challenge.validations += 1
        code, description = judge(challenge, csr, transaction, der, fake.now())
        if code == ScepCode.Success.value and challenge.used_by is None:
            challenge.used_by = (transaction, der)
        if code == ScepCode.Success.value:
            fake.state.validated.add(transaction)
    return code, description


def judge(
    challenge: Challenge, csr: x509.CertificateSigningRequest, transaction: str, der: bytes, now: float
) -> tuple[str, str]:
    """Intune's verdict on a decrypted challenge against the CSR (§7)."""
    if challenge.force_code is not None:
        return challenge.force_code, "" if challenge.force_code == ScepCode.Success.value else "Forced by the fake."
    if challenge.used_by is not None and challenge.used_by != (transaction, der):
        # [U] choice: a challenge is one-off, and what it carries that can be "used up" is the
        # certificate request id Intune issued it for; so a second, different request gets
        # BadCertificateRequestIdInChallenge. The same transaction re-sending the same CSR (a
        # retry after a lost answer) is validated again and succeeds.
        return (
            ScepCode.BadCertificateRequestIdInChallenge.value,
            f"The challenge was already used by transaction {challenge.used_by[0]!r}.",
        )
    if now >= challenge.expires_at:
        return ScepCode.ChallengeExpired.value, "The challenge has expired."
    if not challenge.targeted:
        return (
            ScepCode.ScepProfileNoLongerTargetedToTheClient.value,
            "The SCEP profile is no longer targeted to the device.",
        )
    if challenge.subject is not None:
        expected = challenge.subject_name or csrmod.parse_subject(challenge.subject)
        subject = csr.subject  # a new Name object on every access
        if len(subject) == 0 and len(expected) > 0:
            return ScepCode.SubjectNameMissing.value, f"The request has no subject; expected {challenge.subject!r}."
        if subject != expected:
            return (
                ScepCode.SubjectNameMismatch.value,
                f"Subject {subject.rfc4514_string()!r} does not match the expected {challenge.subject!r}.",
            )
    if challenge.sans is not None:
        got = sorted(csrmod.csr_sans(csr))
        if challenge.sans and not got:
            return ScepCode.SubjectAltNameMissing.value, f"The request has no SAN; expected {list(challenge.sans)}."
        if got != list(challenge.sans):
            return (
                ScepCode.SubjectAltNameMismatch.value,
                f"SANs {got} do not match the expected {list(challenge.sans)}.",
            )
    if challenge.key_size is not None and csrmod.rsa_key_size(csr) != challenge.key_size:
        return ScepCode.KeyLengthMismatch.value, f"The key is not RSA-{challenge.key_size}."
    return ScepCode.Success.value, ""


# -- notifications -----------------------------------------------------------------------


def _expiration(text: str) -> None:
    """ISO 8601 with a zone designator (§5.1); the real parser may be laxer [U]."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise BadRequest(f"'certificateExpirationDateUtc' {text!r} is not an ISO 8601 date-time.") from e
    if parsed.tzinfo is None:
        raise BadRequest(f"'certificateExpirationDateUtc' {text!r} has no time zone designator.")


def notify(fake: FakeIntune, notification: dict[str, Json], route: str) -> tuple[str, str]:
    _only(notification, SUCCESS_FIELDS if route == wire.SUCCESS else FAILURE_FIELDS, "notification")
    transaction = _string(notification, "transactionId")
    text = _string(notification, "certificateRequest")
    _optional_string(notification, "callerInfo")
    if route == wire.SUCCESS:
        thumbprint = _string(notification, "certificateThumbprint")
        serial = _string(notification, "certificateSerialNumber")
        _expiration(_string(notification, "certificateExpirationDateUtc"))
        _string(notification, "issuingCertificateAuthority")
        _optional_string(notification, "caConfiguration")  # absent, null or a string (§5.1)
        _optional_string(notification, "certificateAuthority")
        if not THUMBPRINT.fullmatch(thumbprint):
            raise BadRequest(f"'certificateThumbprint' {thumbprint!r} is not a SHA-1 hex thumbprint.")
        if not SERIAL.fullmatch(serial):
            raise BadRequest(f"'certificateSerialNumber' {serial!r} is not a hex (or decimal) number.")
    else:
        _, hresult = _get(notification, "hResult")
        if not isinstance(hresult, int) or isinstance(hresult, bool):
            raise BadRequest("'hResult' is required and must be an integer.")
        if not HRESULT_MIN <= hresult <= HRESULT_MAX:
            raise BadRequest(f"'hResult' {hresult} is not a 32-bit HRESULT.")
        description = _string(notification, "errorDescription")
        if len(description) > wire.MAX_ERROR_DESCRIPTION:
            raise BadRequest(f"'errorDescription' is {len(description)} characters; the maximum is 255.")
    try:
        read = csrmod.read_csr(text)
    except csrmod.CsrDecodeError as e:
        return ScepCode.CertificateRequestDecodingFailed.value, str(e)
    password, der = read.password, read.der
    with fake.lock:
        if transaction not in fake.state.validated:
            # [U] the real code: a notification is about a request Intune validated; one for a
            # transaction it never saw validated is refused (a client must then not deliver).
            return ScepCode.Unknown.value, f"No validated request has transactionId {transaction!r}."
        challenge = fake.state.challenges.get(password) if password else None
        record = Notification(
            kind="success" if route == wire.SUCCESS else "failure",
            transaction_id=transaction,
            body=dict(notification),
            challenge_known=challenge is not None,
            validated=challenge is not None and challenge.used_by is not None and challenge.used_by[1] == der,
            time=time.time(),
        )
        # [U] idempotency: a repeated notification is accepted again and recorded again.
        fake.state.notifications.setdefault(transaction, []).append(record)
    return ScepCode.Success.value, ""


# -- revocation --------------------------------------------------------------------------


def download(fake: FakeIntune, parameters: dict[str, Json]) -> dict[str, Json]:
    _only(parameters, DOWNLOAD_FIELDS, "downloadParameters")
    _, limit = _get(parameters, "maxRequests")
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise BadRequest("'maxRequests' is required and must be an integer.")
    if not 1 <= limit <= wire.MAX_REVOCATION_BATCH:
        raise BadRequest(f"'maxRequests' {limit} is outside 1..{wire.MAX_REVOCATION_BATCH}.")  # [U] server check
    issuer = _optional_string(parameters, "issuerName")

    def wanted(item_issuer: str | None) -> bool:
        # [U] matching: case-insensitive, surrounding blanks ignored; items without an issuer
        # are only offered to an unfiltered download.
        return issuer is None or (item_issuer is not None and item_issuer.strip().lower() == issuer.strip().lower())

    with fake.lock:
        everything = fake.state.issuer_filter == "ignore"
        items = [item for item in fake.state.revocations.values() if everything or wanted(item.issuer_name)][:limit]
        for item in items:
            item.deliveries += 1
        value = [item.wire() for item in items]
    return {"@odata.context": wire.REVOCATION_ODATA_CONTEXT, "value": value}


def _result(entry: Json) -> tuple[str, bool, RevocationCode, Json, str | None]:
    if not isinstance(entry, dict):
        raise BadRequest("Each result must be an object.")
    _only(entry, RESULT_FIELDS, "results[]")
    context = _string(entry, "requestContext")
    _, succeeded = _get(entry, "succeeded")
    if not isinstance(succeeded, bool):
        raise BadRequest("'succeeded' is required and must be a boolean.")
    present, sent = _get(entry, "errorCode")
    if not present:
        raise BadRequest("'errorCode' is required.")
    try:
        code = RevocationCode.parse(sent)
    except ValueError as e:
        raise BadRequest(str(e)) from e
    message = _optional_string(entry, "errorMessage")  # Gson omits it when null (§6.2)
    if succeeded and code is not RevocationCode.None_:
        raise BadRequest(f"{context}: succeeded=true requires errorCode None, not {code.wire_name}.")
    if succeeded and message:
        raise BadRequest(f"{context}: succeeded=true requires an empty errorMessage.")
    if not succeeded and code is RevocationCode.None_:
        raise BadRequest(f"{context}: succeeded=false requires an errorCode other than None.")
    return context, succeeded, code, sent, message


def upload(fake: FakeIntune, body: dict[str, Json]) -> dict[str, Json]:
    _, results = _get(body, "results")
    if not isinstance(results, list) or not results:
        raise BadRequest("'results' is required and must be a non-empty list.")
    parsed = [_result(entry) for entry in results]  # all or nothing
    with fake.lock:
        for context, succeeded, code, sent, message in parsed:
            known = context in fake.state.revocations
            # [U] guess at Intune's semantics (§6.1, §10): an item stays queued, and is offered
            # again, until a result settles it: success, or a non-retryable (40xx) failure.
            settled = known and (succeeded or not code.retryable)
            if settled:
                del fake.state.revocations[context]
            fake.state.results.setdefault(context, []).append(
                RevocationResult(context, succeeded, code.wire_name, sent, message, known, settled, time.time())
            )
    return {"value": True}
