"""The fake, over real HTTP with httpx, against the contract it stands in for."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support.fake_intune import FakeIntune, running_fake_intune
from tests.support.fake_intune.helpers import assertion_form, client_assertion, client_certificate, csr_b64, make_csr

REPO = Path(__file__).resolve().parents[2]
TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "7b1c9a4e-0000-4000-8000-00000000c11e"
SECRET = "s3cr3t~value"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
INTUNE_SCOPE = "https://api.manage.microsoft.com//.default"
DISCOVERY = "v1.0/servicePrincipals/appId=0000000a-0000-0000-c000-000000000000/endpoints"
CERT_KEY, CERT = client_certificate()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeIntune]:
    with running_fake_intune(
        tenant=TENANT, client_id=CLIENT_ID, client_secret=SECRET, client_certificates=[CERT]
    ) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeIntune) -> Iterator[FakeIntune]:
    server.reset()
    yield server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def token(fake: FakeIntune, http: httpx.Client, scope: str = INTUNE_SCOPE) -> str:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET, "scope": scope}
    response = http.post(fake.token_url, data=form)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def intune_headers(bearer: str, api_version: str = "2018-02-20") -> dict[str, str]:
    return {
        "authorization": f"Bearer {bearer}",
        "api-version": api_version,
        "client-request-id": str(uuid.uuid4()),
        "UserAgent": "scepd-tests/1",
    }


def scep(
    fake: FakeIntune, http: httpx.Client, action: str, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return http.post(
        f"{fake.scep_service_url}/ScepActions/{action}",
        json=body,
        headers=headers if headers is not None else intune_headers(token(fake, http)),
    )


def pki(
    fake: FakeIntune, http: httpx.Client, action: str, body: Any, api_version: str = "5019-05-05"
) -> httpx.Response:
    return http.post(
        f"{fake.pki_service_url}/CertificateAuthorityRequests/{action}",
        json=body,
        headers=intune_headers(token(fake, http), api_version),
    )


def validate(fake: FakeIntune, http: httpx.Client, csr_der: bytes | str, transaction: str = "t-1") -> dict[str, Any]:
    text = csr_der if isinstance(csr_der, str) else csr_b64(csr_der)
    response = scep(
        fake,
        http,
        "validateRequest",
        {"request": {"transactionId": transaction, "certificateRequest": text, "callerInfo": "scepd/test"}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"code", "errorDescription"}
    return dict(body)


def jwt_claims(jwt: str) -> dict[str, Any]:
    part = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


# -- Entra token endpoint ------------------------------------------------------------------


def test_token_for_each_audience_and_scope_form(fake: FakeIntune, http: httpx.Client) -> None:
    for scope, audience_role in (
        (GRAPH_SCOPE, "Application.Read.All"),
        (INTUNE_SCOPE, "scep_challenge_provider"),
        ("https://api.manage.microsoft.com/.default", "scep_challenge_provider"),
        (f"{INTUNE_SCOPE} openid profile offline_access", "scep_challenge_provider"),
        (f"{fake.graph_url.rstrip('/')}/.default", "Application.Read.All"),  # a client deriving scope from graph_url
    ):
        form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET, "scope": scope}
        response = http.post(fake.token_url, data=form)
        assert response.status_code == 200, (scope, response.text)
        body = response.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 3599
        assert jwt_claims(body["access_token"])["roles"] == [audience_role]
    assert [c.route for c in fake.calls()] == ["token"] * 5
    assert fake.calls()[0].body["client_secret"] == SECRET  # recorded as sent


def test_token_refusals_are_entra_errors(fake: FakeIntune, http: httpx.Client) -> None:
    good = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET, "scope": GRAPH_SCOPE}
    cases = [
        (fake.token_url, {"client_secret": "wrong"}, 401, "invalid_client", 7000215),
        (fake.token_url.replace(TENANT, "other.example"), {}, 400, "invalid_request", 90002),
        (fake.token_url, {"client_id": str(uuid.uuid4())}, 400, "unauthorized_client", 700016),
        (fake.token_url, {"scope": "https://graph.microsoft.com/User.Read"}, 400, "invalid_scope", 1002012),
        (fake.token_url, {"scope": "https://example.com/.default"}, 400, "invalid_scope", 500011),
        (fake.token_url, {"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
    ]
    for url, change, status, error, code in cases:
        response = http.post(url, data={**good, **change})
        assert response.status_code == status, (change, response.text)
        body = response.json()
        assert body["error"] == error and body["error_codes"] == [code]
        assert body["error_description"].startswith(f"AADSTS{code}:")
    no_credential = {k: v for k, v in good.items() if k != "client_secret"}
    assert http.post(fake.token_url, data=no_credential).json()["error_codes"] == [7000216]


def test_token_by_certificate_assertion(fake: FakeIntune, http: httpx.Client) -> None:
    def post(assertion: str) -> httpx.Response:
        return http.post(fake.token_url, data=assertion_form(CLIENT_ID, assertion, INTUNE_SCOPE))

    good = post(client_assertion(CERT_KEY, CERT, CLIENT_ID, fake.token_url))
    assert good.status_code == 200, good.text
    assert jwt_claims(good.json()["access_token"])["roles"] == ["scep_challenge_provider"]

    other_key, other_cert = client_certificate("not registered")
    refusals = [
        (client_assertion(other_key, other_cert, CLIENT_ID, fake.token_url), 700027),  # unknown certificate
        (client_assertion(other_key, CERT, CLIENT_ID, fake.token_url), 700027),  # registered x5t, wrong key
        (client_assertion(CERT_KEY, CERT, CLIENT_ID, "https://login.microsoftonline.com/x/oauth2/v2.0/token"), 50027),
        (client_assertion(CERT_KEY, CERT, CLIENT_ID, fake.token_url, now=time.time() - 3600), 700024),
        (client_assertion(CERT_KEY, CERT, CLIENT_ID, fake.token_url, claims={"iss": "someone-else"}), 700021),
    ]
    for assertion, code in refusals:
        response = post(assertion)
        assert response.status_code == 401 and response.json()["error_codes"] == [code], response.text
    tampered = client_assertion(CERT_KEY, CERT, CLIENT_ID, fake.token_url).split(".")
    tampered[1] = (
        base64.urlsafe_b64encode(json.dumps({**jwt_claims("." + tampered[1] + "."), "exp": 2**40}).encode())
        .decode()
        .rstrip("=")
    )
    assert post(".".join(tampered)).json()["error_codes"] == [700027]


def test_audience_mismatch_and_missing_role(fake: FakeIntune, http: httpx.Client) -> None:
    intune_token, graph_token = token(fake, http), token(fake, http, GRAPH_SCOPE)
    response = http.get(fake.graph_url + DISCOVERY, headers={"authorization": f"Bearer {intune_token}"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "InvalidAuthenticationToken"
    body = {"request": {"transactionId": "t", "certificateRequest": "AA==", "callerInfo": "x"}}
    response = scep(fake, http, "validateRequest", body, intune_headers(graph_token))
    assert response.status_code == 401 and "audience" in response.json()["error"]["message"]
    fake.set_roles(intune=[])
    response = scep(fake, http, "validateRequest", body, intune_headers(token(fake, http)))
    assert response.status_code == 401 and "scep_challenge_provider" in response.json()["error"]["message"]


def test_token_lifetime_expiry_and_revocation(fake: FakeIntune, http: httpx.Client) -> None:
    fake.set_token_lifetime(120)
    bearer = token(fake, http, GRAPH_SCOPE)
    assert jwt_claims(bearer)["exp"] - jwt_claims(bearer)["nbf"] == 120
    assert http.get(fake.graph_url + DISCOVERY, headers={"authorization": f"Bearer {bearer}"}).status_code == 200
    fake.advance_clock(121)
    response = http.get(fake.graph_url + DISCOVERY, headers={"authorization": f"Bearer {bearer}"})
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]
    fresh = token(fake, http, GRAPH_SCOPE)
    fake.expire_tokens()
    assert http.get(fake.graph_url + DISCOVERY, headers={"authorization": f"Bearer {fresh}"}).status_code == 401


# -- Graph discovery ----------------------------------------------------------------------


def test_discovery_both_forms(fake: FakeIntune, http: httpx.Client) -> None:
    headers = {"authorization": f"Bearer {token(fake, http, GRAPH_SCOPE)}", "client-request-id": "abc"}
    response = http.get(fake.graph_url + DISCOVERY, headers=headers)
    assert response.status_code == 200 and response.headers["client-request-id"] == "abc"
    found = {e["providerName"]: e["uri"] for e in response.json()["value"]}
    assert found == {
        "ScepRequestValidationFEService": f"{fake.base_url}/RACerts/ScepRequestValidationFEService/Gateway/StatelessScepRequestValidationService",
        "PkiConnectorFEService": f"{fake.base_url}/RACerts/StatelessPkiConnectorService/Gateway/StatelessPkiConnectorService",
    }
    principals = http.get(
        fake.graph_url + "v1.0/servicePrincipals",
        params={"$filter": "appId eq '0000000a-0000-0000-c000-000000000000'"},
        headers=headers,
    ).json()["value"]
    endpoints = http.get(fake.graph_url + f"v1.0/servicePrincipals/{principals[0]['id']}/endpoints", headers=headers)
    assert endpoints.json()["value"] == response.json()["value"]
    assert http.get(fake.graph_url + DISCOVERY).status_code == 401
    other = DISCOVERY.replace("0000000a", "0000000b")
    assert http.get(fake.graph_url + other, headers=headers).json()["error"]["code"] == "Request_ResourceNotFound"


def test_discovery_missing_and_duplicate_providers(fake: FakeIntune, http: httpx.Client) -> None:
    headers = {"authorization": f"Bearer {token(fake, http, GRAPH_SCOPE)}"}
    fake.set_discovery(omit=["PkiConnectorFEService"])
    names = [e["providerName"] for e in http.get(fake.graph_url + DISCOVERY, headers=headers).json()["value"]]
    assert names == ["ScepRequestValidationFEService"]
    fake.set_discovery(duplicate=["ScepRequestValidationFEService"], duplicate_first=True)
    entries = http.get(fake.graph_url + DISCOVERY, headers=headers).json()["value"]
    assert [e["providerName"] for e in entries].count("ScepRequestValidationFEService") == 2
    stale = entries[0]["uri"]
    assert stale != fake.scep_service_url and entries[1]["uri"] == fake.scep_service_url
    assert http.post(stale + "/ScepActions/validateRequest", json={}).status_code == 404
    fake.set_discovery()
    assert len(http.get(fake.graph_url + DISCOVERY, headers=headers).json()["value"]) == 2


# -- validateRequest ----------------------------------------------------------------------


def test_validate_success_then_reuse(fake: FakeIntune, http: httpx.Client) -> None:
    challenge = fake.mint_challenge(
        "CN=device1,O=Contoso", ["dns:device1.contoso.com", "uri:tag:microsoft.com,2022-09-14:sid:S-1-5-21-1"]
    )
    assert len(challenge) > 3000 and re.fullmatch(r"[A-Za-z0-9_-]+", challenge)
    csr = make_csr(
        "CN=device1,O=Contoso",
        challenge,
        ["uri:tag:microsoft.com,2022-09-14:sid:S-1-5-21-1", "dns:DEVICE1.contoso.com"],
    )
    assert validate(fake, http, csr, "t-1") == {"code": "Success", "errorDescription": ""}
    assert validate(fake, http, csr, "t-1")["code"] == "Success"  # a retry of the same request
    other = make_csr(
        "CN=device1,O=Contoso",
        challenge,
        ["dns:device1.contoso.com", "uri:tag:microsoft.com,2022-09-14:sid:S-1-5-21-1"],
    )
    assert validate(fake, http, other, "t-2")["code"] == "BadCertificateRequestIdInChallenge"
    call = fake.calls("validate")[0]
    assert call.headers["api-version"] == "2018-02-20" and call.headers["useragent"] == "scepd-tests/1"
    assert call.body["request"]["transactionId"] == "t-1" and call.status == 200


@pytest.mark.parametrize(
    ("csr_subject", "csr_sans", "code"),
    [
        ("CN=device2,O=Contoso", ["dns:device1.contoso.com"], "SubjectNameMismatch"),
        ("O=Contoso,CN=device1", ["dns:device1.contoso.com"], "SubjectNameMismatch"),  # RDN order counts
        (None, ["dns:device1.contoso.com"], "SubjectNameMissing"),
        ("CN=device1,O=Contoso", ["dns:device2.contoso.com"], "SubjectAltNameMismatch"),
        ("CN=device1,O=Contoso", [], "SubjectAltNameMissing"),
        ("CN=device1,O=Contoso", ["dns:device1.contoso.com", "email:a@contoso.com"], "SubjectAltNameMismatch"),
    ],
)
def test_validate_subject_and_san_checks(
    fake: FakeIntune, http: httpx.Client, csr_subject: str | None, csr_sans: list[str], code: str
) -> None:
    challenge = fake.mint_challenge("CN=device1,O=Contoso", ["dns:device1.contoso.com"])
    result = validate(fake, http, make_csr(csr_subject, challenge, csr_sans))
    assert result["code"] == code and result["errorDescription"]
    # A refused request does not use the challenge up.
    assert (
        validate(fake, http, make_csr("CN=device1,O=Contoso", challenge, ["dns:device1.contoso.com"]))["code"]
        == "Success"
    )


def test_validate_challenge_states(fake: FakeIntune, http: httpx.Client) -> None:
    expiring = fake.mint_challenge("CN=d", ttl=60)
    fake.advance_clock(61)
    assert validate(fake, http, make_csr("CN=d", expiring))["code"] == "ChallengeExpired"
    untargeted = fake.mint_challenge("CN=d")
    fake.set_targeted(untargeted, False)
    assert validate(fake, http, make_csr("CN=d", untargeted))["code"] == "ScepProfileNoLongerTargetedToTheClient"
    assert validate(fake, http, make_csr("CN=d", None))["code"] == "ChallengePasswordMissing"
    assert validate(fake, http, make_csr("CN=d", "bm90LWEtcmVhbC1jaGFsbGVuZ2U"))["code"] == "ChallengeDecryptionError"
    assert validate(fake, http, make_csr("CN=d", "not base64url!"))["code"] == "ChallengeDecodingError"
    forced = fake.mint_challenge(None, None, force_code="BadDeviceIdInChallenge")
    assert validate(fake, http, make_csr("CN=anything", forced))["code"] == "BadDeviceIdInChallenge"


def test_validate_undecodable_requests(fake: FakeIntune, http: httpx.Client) -> None:
    for text in (
        "%%% not base64",
        base64.b64encode(b"\x30\x03\x02\x01\x00").decode(),
        base64.urlsafe_b64encode(b"\xfb\xff" * 40).decode(),
    ):
        assert validate(fake, http, text)["code"] == "CertificateRequestDecodingFailed"
    pem_wrapped = base64.encodebytes(make_csr("CN=d", "x")).decode()  # with line breaks
    assert validate(fake, http, pem_wrapped)["code"] == "CertificateRequestDecodingFailed"


def test_envelope_checks(fake: FakeIntune, http: httpx.Client) -> None:
    challenge = fake.mint_challenge("CN=d", None)
    body = {
        "request": {"transactionId": "t", "certificateRequest": csr_b64(make_csr("CN=d", challenge)), "callerInfo": "x"}
    }
    bearer = token(fake, http)

    def without(name: str) -> dict[str, str]:
        return {k: v for k, v in intune_headers(bearer).items() if k != name}

    for headers, status in (
        (without("authorization"), 401),
        (without("api-version"), 400),
        ({**intune_headers(bearer), "api-version": "2020-01-01"}, 400),
        (without("client-request-id"), 400),
    ):
        response = scep(fake, http, "validateRequest", body, headers)
        assert response.status_code == status and "error" in response.json(), headers
    response = http.post(
        fake.scep_service_url + "/ScepActions/validateRequest",
        content=json.dumps(body),
        headers={**intune_headers(bearer), "content-type": "text/plain"},
    )
    assert response.status_code == 415
    assert scep(fake, http, "validateRequest", {"transactionId": "t"}).status_code == 400
    # EJBCA's api-version on ScepActions and a decimal client-request-id are accepted.
    headers = {**intune_headers(bearer, "5019-05-05"), "client-request-id": "1234567890123"}
    assert scep(fake, http, "validateRequest", body, headers).json()["code"] == "Success"


# -- notifications ------------------------------------------------------------------------


def success_body(csr: bytes, transaction: str, **extra: Any) -> dict[str, Any]:
    notification = {
        "transactionId": transaction,
        "certificateRequest": csr_b64(csr),
        "certificateThumbprint": "A" * 40,
        "certificateSerialNumber": "3FA2B0C1",
        "certificateExpirationDateUtc": "2026-06-11T16:11:20.090Z",
        "issuingCertificateAuthority": "CN=scepd CA,O=Contoso",
        "callerInfo": "scepd/test",
        **extra,
    }
    return {"notification": {k: v for k, v in notification.items() if v is not ...}}


def test_success_notification(fake: FakeIntune, http: httpx.Client) -> None:
    challenge = fake.mint_challenge("CN=d", None)
    csr = make_csr("CN=d", challenge)
    validate(fake, http, csr, "t-ok")
    for extra in (
        {},
        {"caConfiguration": None, "certificateAuthority": None},
        {"caConfiguration": "ca1\\Contoso CA", "certificateAuthority": "scepd"},
    ):
        response = scep(fake, http, "successNotification", success_body(csr, "t-ok", **extra))
        assert response.json() == {"code": "Success", "errorDescription": ""}
    recorded = fake.notifications()["t-ok"]
    assert len(recorded) == 3 and all(n.kind == "success" and n.validated and n.challenge_known for n in recorded)
    assert "caConfiguration" not in recorded[0].body and recorded[2].body["caConfiguration"] == "ca1\\Contoso CA"
    # A notification for a transaction never validated is refused, and not recorded.
    unvalidated = make_csr("CN=d", "bm8")
    refused = scep(fake, http, "successNotification", success_body(unvalidated, "t-never")).json()
    assert refused["code"] == "Unknown" and "t-never" not in fake.notifications()
    # Only the contract's camelCase names, and no others.
    wrapped = success_body(csr, "t-ok")
    for body in (
        {"Notification": wrapped["notification"]},
        {
            "notification": {
                ("TransactionId" if k == "transactionId" else k): v for k, v in wrapped["notification"].items()
            }
        },
        {"notification": {**wrapped["notification"], "certificateTemplate": "x"}},
        {**wrapped, "extra": 1},
    ):
        response = scep(fake, http, "successNotification", body)
        assert response.status_code == 400 and "Unknown property" in response.json()["error"]["message"], body
    for bad in (
        {"certificateThumbprint": ...},
        {"certificateSerialNumber": ""},
        {"certificateThumbprint": "ab" * 32},  # SHA-256 is not a thumbprint
        {"certificateExpirationDateUtc": "Thursday, June 11, 2026"},
        {"caConfiguration": 5},
    ):
        response = scep(fake, http, "successNotification", success_body(csr, "t-bad", **bad))
        assert response.status_code == 400 and response.json()["error"]["code"] == "BadRequest", bad
    assert "t-bad" not in fake.notifications()


def test_failure_notification(fake: FakeIntune, http: httpx.Client) -> None:
    csr = make_csr("CN=d", fake.mint_challenge("CN=d", None))
    validate(fake, http, csr, "t-f")

    def failure(hresult: Any, description: Any = "CA offline") -> httpx.Response:
        body = {
            "notification": {
                "transactionId": "t-f",
                "certificateRequest": csr_b64(csr),
                "hResult": hresult,
                "errorDescription": description,
                "callerInfo": "x",
            }
        }
        return scep(fake, http, "failureNotification", body)

    for hresult in (0x8000FFFF, 2**32 - 1, -2147467259, 0xFFFF):
        assert failure(hresult).json()["code"] == "Success", hresult
    assert failure(0x80004005, "x" * 255).json()["code"] == "Success"
    bad: list[tuple[Any, Any]] = [(2**32, "x"), (True, "x"), ("0x80004005", "x"), (1, "x" * 256), (1, ""), (1, None)]
    for hresult, description in bad:
        assert failure(hresult, description).status_code == 400, (hresult, description)
    recorded = fake.notifications("failure")["t-f"]
    assert [n.body["hResult"] for n in recorded] == [2147549183, 4294967295, -2147467259, 65535, 2147500037]


# -- revocation ---------------------------------------------------------------------------


def test_revocation_download_and_upload(fake: FakeIntune, http: httpx.Client) -> None:
    a = fake.queue_revocation("0A", "CN=scepd CA", "ca1")
    b = fake.queue_revocation("0B", "CN=other CA")
    c = fake.queue_revocation("0C", "cn=SCEPD ca", None, omit_nulls=True)

    def download(limit: Any, issuer: str | None = None) -> httpx.Response:
        return pki(
            fake,
            http,
            "downloadRevocationRequests",
            {"downloadParameters": {"maxRequests": limit, "issuerName": issuer}},
        )

    everything = download(10).json()
    assert everything["@odata.context"].endswith("#Collection(microsoft.management.services.api.caRevocationRequest)")
    assert [i["requestContext"] for i in everything["value"]] == [a, b, c]
    assert everything["value"][0] == {
        "requestContext": a,
        "serialNumber": "0A",
        "issuerName": "CN=scepd CA",
        "caConfiguration": "ca1",
    }
    assert everything["value"][2] == {"requestContext": c, "serialNumber": "0C", "issuerName": "cn=SCEPD ca"}
    assert [i["serialNumber"] for i in download(1).json()["value"]] == ["0A"]
    assert [i["serialNumber"] for i in download(500, "CN=scepd CA").json()["value"]] == ["0A", "0C"]
    for limit in (0, 501, "10", None):
        assert download(limit).status_code == 400, limit
    assert (
        pki(
            fake,
            http,
            "downloadRevocationRequests",
            {"downloadParameters": {"maxRequests": 1}},
            api_version="2018-02-20",
        ).status_code
        == 400
    )

    results = {
        "results": [
            {"requestContext": a, "succeeded": True, "errorCode": "0"},  # Java: numeric string, no errorMessage
            {"requestContext": b, "succeeded": False, "errorCode": "4101", "errorMessage": "CA busy"},  # retryable
            {
                "requestContext": c,
                "succeeded": False,
                "errorCode": "CertificateNotFoundError",
                "errorMessage": None,
            },  # C#: enum name, camelCase by its resolver
        ]
    }
    pascal = {"results": [{"RequestContext": c, "Succeeded": False, "ErrorCode": "4004", "ErrorMessage": None}]}
    refused = pki(fake, http, "uploadRevocationResults", pascal)
    assert refused.status_code == 400 and "'requestContext' (camelCase)" in refused.json()["error"]["message"]
    assert not fake.revocation_results()
    response = pki(fake, http, "uploadRevocationResults", results)
    assert response.status_code == 200 and response.json() == {"value": True}
    assert [i.request_context for i in fake.pending_revocations()] == [b]  # [U]: retryable stays queued
    recorded = fake.revocation_results()
    assert recorded[a][0].error_code == "None" and recorded[a][0].acknowledged
    assert recorded[b][0].error_code == "ServiceUnavailableException" and not recorded[b][0].acknowledged
    assert (
        recorded[c][0].error_code == "CertificateNotFoundError"
        and recorded[c][0].error_code_sent == "CertificateNotFoundError"
    )
    pki(
        fake,
        http,
        "uploadRevocationResults",
        {"results": [{"requestContext": b, "succeeded": True, "errorCode": "None", "errorMessage": ""}]},
    )
    assert fake.pending_revocations() == []


def test_revocation_upload_invariants(fake: FakeIntune, http: httpx.Client) -> None:
    context = fake.queue_revocation("0A")
    for result in (
        {"requestContext": context, "succeeded": True, "errorCode": "4000"},
        {"requestContext": context, "succeeded": True, "errorCode": "None", "errorMessage": "oops"},
        {"requestContext": context, "succeeded": False, "errorCode": "None"},
        {"requestContext": context, "succeeded": False, "errorCode": "NoSuchCode"},
        {"requestContext": context, "succeeded": "true", "errorCode": "0"},
        {"requestContext": context, "succeeded": True},
    ):
        assert pki(fake, http, "uploadRevocationResults", {"results": [result]}).status_code == 400, result
    assert pki(fake, http, "uploadRevocationResults", {"results": []}).status_code == 400
    assert len(fake.pending_revocations()) == 1 and fake.revocation_results() == {}


def test_revoke_what_was_notified(fake: FakeIntune, http: httpx.Client) -> None:
    csr = make_csr("CN=d", fake.mint_challenge("CN=d", None))
    validate(fake, http, csr, "t-r")
    scep(fake, http, "successNotification", success_body(csr, "t-r", caConfiguration="ca1"))
    context = fake.revoke_notified("t-r")
    item = pki(
        fake, http, "downloadRevocationRequests", {"downloadParameters": {"maxRequests": 10, "issuerName": None}}
    ).json()["value"][0]
    assert item == {
        "requestContext": context,
        "serialNumber": "3FA2B0C1",
        "issuerName": "CN=scepd CA,O=Contoso",
        "caConfiguration": "ca1",
    }


# -- faults -------------------------------------------------------------------------------


def test_fault_statuses_and_bodies(fake: FakeIntune, http: httpx.Client) -> None:
    csr = make_csr("CN=d", fake.mint_challenge("CN=d", None))
    bearer = token(fake, http)
    body = {"request": {"transactionId": "t", "certificateRequest": csr_b64(csr), "callerInfo": "x"}}

    fake.fail("validate", 500, times=2)
    for _ in range(2):
        response = scep(fake, http, "validateRequest", body, intune_headers(bearer))
        assert response.status_code == 500 and response.json()["error"]["code"] == "InternalError"
        json.loads(response.json()["error"]["message"])  # stringified server JSON, as observed
    fake.fail("validate", 429, retry_after=7)
    response = scep(fake, http, "validateRequest", body, intune_headers(bearer))
    assert response.status_code == 429 and response.headers["retry-after"] == "7" and "error" in response.json()
    fake.fail("validate", 401)
    response = scep(fake, http, "validateRequest", body, intune_headers(bearer))
    assert response.status_code == 401 and response.json()["error"]["code"] == "Unauthorized"
    assert scep(fake, http, "validateRequest", body, intune_headers(bearer)).json()["code"] == "Success"
    assert [c.outcome for c in fake.calls("validate")] == ["fault", "fault", "fault", "fault", "answered"]

    fake.fail("token", 401)
    response = http.post(
        fake.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "scope": GRAPH_SCOPE,
        },
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    fake.fail("discovery", 403)
    response = http.get(
        fake.graph_url + DISCOVERY, headers={"authorization": f"Bearer {token(fake, http, GRAPH_SCOPE)}"}
    )
    assert response.json()["error"]["code"] == "Authorization_RequestDenied"
    fake.fail("upload", 200, body={"value": False})
    result = {"results": [{"requestContext": "x", "succeeded": True, "errorCode": "None"}]}
    assert pki(fake, http, "uploadRevocationResults", result).json() == {"value": False}
    fake.fail("download", 502, body=b"<html>Bad Gateway</html>")
    assert pki(fake, http, "downloadRevocationRequests", {}).text == "<html>Bad Gateway</html>"


def test_fault_slow(fake: FakeIntune, http: httpx.Client) -> None:
    fake.slow("success", 0.4)
    csr = make_csr("CN=d", fake.mint_challenge("CN=d", None))
    csr2 = make_csr("CN=d", fake.mint_challenge("CN=d", None))
    validate(fake, http, csr, "t-slow")
    validate(fake, http, csr2, "t-slow2")
    started = time.monotonic()
    assert scep(fake, http, "successNotification", success_body(csr, "t-slow")).json()["code"] == "Success"
    assert time.monotonic() - started >= 0.4
    fake.slow("success", 2)
    with pytest.raises(httpx.ReadTimeout):
        http.post(
            fake.scep_service_url + "/ScepActions/successNotification",
            json=success_body(csr2, "t-slow2"),
            headers=intune_headers(token(fake, http)),
            timeout=0.3,
        )
    assert "t-slow2" in fake.notifications()  # handled; only the answer was late


def test_fault_drop(fake: FakeIntune, http: httpx.Client) -> None:
    challenge = fake.mint_challenge("CN=d", None)
    csr = make_csr("CN=d", challenge)
    body = {"request": {"transactionId": "t-drop", "certificateRequest": csr_b64(csr), "callerInfo": "x"}}
    bearer = token(fake, http)
    fake.drop("validate")
    with pytest.raises(httpx.TransportError):
        scep(fake, http, "validateRequest", body, intune_headers(bearer))
    fake.drop("validate", how="close")
    with pytest.raises(httpx.RemoteProtocolError):
        scep(fake, http, "validateRequest", body, intune_headers(bearer))
    assert fake.challenges()[0].used_by is None
    fake.drop("validate", after_processing=True)
    with pytest.raises(httpx.TransportError):
        scep(fake, http, "validateRequest", body, intune_headers(bearer))
    assert fake.challenges()[0].used_by is not None
    assert [(c.status, c.outcome) for c in fake.calls("validate")] == [(None, "dropped")] * 3
    assert scep(fake, http, "validateRequest", body, intune_headers(bearer)).json()["code"] == "Success"


def test_admin_api(fake: FakeIntune, http: httpx.Client) -> None:
    base = fake.base_url
    info = http.get(f"{base}/_fake/info").json()
    assert info["authority"] == fake.authority and 'graph_url = "' in info["configSnippet"]
    challenge = http.post(f"{base}/_fake/challenges", json={"subject": "CN=a", "sans": ["dns:a"], "ttl": 60}).json()[
        "challenge"
    ]
    assert validate(fake, http, make_csr("CN=a", challenge, ["dns:a"]))["code"] == "Success"
    assert http.post(f"{base}/_fake/challenges", json={"subject": "not a name"}).status_code == 400
    http.post(f"{base}/_fake/faults", json={"route": "validate", "status": 429})
    assert validate_status(fake, http) == 429
    assert http.post(f"{base}/_fake/faults", json={"route": "nope"}).status_code == 400
    context = http.post(f"{base}/_fake/revocations", json={"serialNumber": "0F"}).json()["requestContext"]
    assert [r["requestContext"] for r in http.get(f"{base}/_fake/revocations").json()] == [context]
    assert [c["route"] for c in http.get(f"{base}/_fake/calls", params={"route": "validate"}).json()] == [
        "validate",
        "validate",
    ]
    http.post(f"{base}/_fake/reset")
    assert http.get(f"{base}/_fake/calls").json() == []


def validate_status(fake: FakeIntune, http: httpx.Client) -> int:
    body = {"request": {"transactionId": "t", "certificateRequest": "AA==", "callerInfo": "x"}}
    return scep(fake, http, "validateRequest", body).status_code


async def test_async_client_and_bounded_shutdown() -> None:
    """An async test's client and the fake live on different loops; leaving the context
    while an answer is still being delayed must not hang."""
    started = time.monotonic()
    with running_fake_intune(client_secret=SECRET) as fake:
        async with httpx.AsyncClient(timeout=5) as client:
            form = {
                "grant_type": "client_credentials",
                "client_id": fake.client_id,
                "client_secret": SECRET,
                "scope": GRAPH_SCOPE,
            }
            assert (await client.post(fake.token_url, data=form)).status_code == 200
            fake.slow("token", 30)
            with trio.move_on_after(0.2):
                await client.post(fake.token_url, data=form)
    assert time.monotonic() - started < 5


# -- command line -------------------------------------------------------------------------


def test_cli_serve_mint_revoke_calls(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "tests.support.fake_intune"]
    serve = subprocess.Popen(
        [
            *cli,
            "serve",
            "--port",
            "0",
            "--tenant",
            TENANT,
            "--client-id",
            CLIENT_ID,
            "--client-secret-file",
            str(secret_file),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert serve.stdout is not None
        first = serve.stdout.readline()
        match = re.match(r"fake Intune serving at (http://127\.0\.0\.1:\d+)$", first.strip())
        assert match, first
        url = match.group(1)
        output = ""
        while "intune_resource_url" not in output:
            output += serve.stdout.readline()
        assert f'authority = "{url}/"' in output and f'client_id = "{CLIENT_ID}"' in output
        assert f'client_secret = "file:{secret_file}"' in output and f'tenant = "{TENANT}"' in output

        def run(*args: str) -> str:
            done = subprocess.run(
                [*cli, *args, "--url", url], cwd=REPO, env=env, capture_output=True, text=True, timeout=20, check=False
            )
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        challenge = run("mint", "--subject", "CN=device1", "--san", "dns:device1", "--ttl", "600")
        assert len(challenge) > 3000
        context = run("revoke", "--serial", "0ABC")
        with httpx.Client(timeout=5) as http:
            form = {
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
                "scope": INTUNE_SCOPE,
            }
            bearer = http.post(f"{url}/{TENANT}/oauth2/v2.0/token", data=form).json()["access_token"]
            body = {
                "request": {
                    "transactionId": "t",
                    "certificateRequest": csr_b64(make_csr("CN=device1", challenge, ["dns:device1"])),
                    "callerInfo": "x",
                }
            }
            response = http.post(
                f"{url}/RACerts/ScepRequestValidationFEService/Gateway/StatelessScepRequestValidationService/ScepActions/validateRequest",
                json=body,
                headers=intune_headers(bearer),
            )
            assert response.json()["code"] == "Success"
            pending = http.get(f"{url}/_fake/revocations").json()
            assert pending[0]["requestContext"] == context and pending[0]["serialNumber"] == "0ABC"
        calls = run("calls")
        assert "token" in calls and "validate" in calls and SECRET not in calls
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=10)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(timeout=5)
    assert serve.returncode == 0
