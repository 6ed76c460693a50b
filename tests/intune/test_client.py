"""The Intune client's answers to odd but legitimate replies, and its readiness probe."""

from __future__ import annotations

import json
import logging

import pytest

from scepd.health import Check, Readiness
from scepd.intune.client import IntuneClient
from scepd.intune.errors import IntuneHttpError
from tests.support.fake_intune.helpers import make_csr
from tests.support.fake_intune.state import FakeIntune


async def test_success_with_null_error_description_is_accepted(intune: IntuneClient, fake_intune: FakeIntune) -> None:
    """Microsoft's C# client takes it; the Java one would not, and neither did scepd."""
    fake_intune.fail("validate", 200, body={"code": "Success", "errorDescription": None})
    verdict = await intune.validate("tid-null", make_csr("CN=device", "anything"))
    assert verdict.success and verdict.description == ""


async def test_a_missing_code_is_still_refused(intune: IntuneClient, fake_intune: FakeIntune) -> None:
    from scepd.intune.errors import IntuneBadResponse

    fake_intune.fail("validate", 200, body={"code": None, "errorDescription": None})
    with pytest.raises(IntuneBadResponse):
        await intune.validate("tid-null", make_csr("CN=device", "anything"))


async def test_readiness_notes_a_missing_pki_connector_but_stays_ready(
    intune: IntuneClient, fake_intune: FakeIntune
) -> None:
    fake_intune.set_discovery(omit=["PkiConnectorFEService"])
    status, body = await Readiness([Check("intune", intune.check, timeout=5, cache_ok=0, cache_failed=0)]).report()
    assert status == 200
    assert "PkiConnectorFEService" in json.loads(body)["checks"]["intune"]["reason"]
    fake_intune.set_discovery(omit=["ScepRequestValidationFEService"])
    intune._forget_services()
    status, body = await Readiness([Check("intune", intune.check, timeout=5, cache_ok=0, cache_failed=0)]).report()
    assert status == 503


async def test_a_cached_map_without_the_validation_service_is_looked_up_again(
    intune: IntuneClient, fake_intune: FakeIntune
) -> None:
    """The revocation sync can cache Graph's list while it lacks the validation service; once Graph
    lists it again, the next validation looks again instead of failing on the stale list."""
    fake_intune.set_discovery(omit=["ScepRequestValidationFEService"])
    assert await intune.has_service("PkiConnectorFEService")  # caches a list without the validation service
    fake_intune.set_discovery()
    discoveries = len(fake_intune.calls("discovery"))
    verdict = await intune.validate("tid-stale-map", make_csr("CN=device", "anything"))
    assert verdict.code  # Intune answered (the challenge is not one it minted: that is not the point here)
    assert len(fake_intune.calls("discovery")) == discoveries + 1


async def test_every_exchange_is_logged_with_its_client_request_id(
    intune: IntuneClient, fake_intune: FakeIntune, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="scepd.intune")
    challenge = fake_intune.mint_challenge("CN=device", ttl=600, targeted=False)
    verdict = await intune.validate("tid-log", make_csr("CN=device", challenge))
    fake_intune.fail("validate", 500, times=None)
    with pytest.raises(IntuneHttpError) as failed:
        await intune.validate("tid-log-2", make_csr("CN=device", challenge))
    sent = [c.headers["client-request-id"] for c in fake_intune.calls("validate")]
    assert len(sent) == 2 and len(set(sent)) == 2
    ok, refused = sent
    lines = caplog.text.splitlines()
    # A 200 exchange at debug; Intune's non-Success verdict as a warning with its code and text.
    assert any("DEBUG" in line and f"client_request_id={ok}" in line and "status=200" in line for line in lines)
    assert any(
        "WARNING" in line
        and "event=intune_verdict" in line
        and f"client_request_id={ok}" in line
        and f"code={verdict.code}" in line
        for line in lines
    )
    # A failed exchange as a warning with the error Intune sent; the error carries the id too.
    assert any(
        "WARNING" in line and f"client_request_id={refused}" in line and "code=InternalError" in line for line in lines
    )
    assert failed.value.request_id == refused


async def test_a_token_refresh_stalls_only_the_caller_that_refreshes(
    intune: IntuneClient, fake_intune: FakeIntune
) -> None:
    """Past the refresh time (the margin before expiry) Entra answers slowly: other calls go on with
    the still-valid token instead of queueing behind the refresh."""
    import trio

    now = [1000.0]
    intune.tokens.clock = lambda: now[0]  # the token cache's own clock, moved by hand instead of waited for
    fake_intune.set_token_lifetime(3600)
    await intune.tokens.token(intune.intune_scope)
    now[0] += 3600 - intune.tokens.REFRESH_MARGIN / 2  # inside the refresh margin, before expiry
    fake_intune.slow("token", 0.7)
    waits: list[float] = []

    async def one() -> None:
        started = trio.current_time()
        await intune.tokens.token(intune.intune_scope)
        waits.append(trio.current_time() - started)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(one)
    waits.sort()
    assert waits[-1] >= 0.65  # the refresher waited for Entra
    assert all(w < 0.1 for w in waits[:-1]), waits  # nobody else did


async def test_a_refused_token_request_is_logged_with_its_id_and_entras_error(
    fake_intune: FakeIntune, caplog: pytest.LogCaptureFixture
) -> None:
    import httpx

    from scepd.intune.auth import ClientSecret
    from scepd.intune.errors import IntuneAuthError
    from tests.intune.conftest import settings_for

    caplog.set_level(logging.INFO, logger="scepd.intune")
    async with httpx.AsyncClient() as http:
        client = IntuneClient(settings_for(fake_intune), ClientSecret("not-the-secret"), http)
        with pytest.raises(IntuneAuthError) as refused:
            await client.validate("tid", make_csr("CN=device", "x"))
    [call] = fake_intune.calls("token")
    sent = call.headers["client-request-id"]
    assert refused.value.request_id == sent
    [line] = [r.getMessage() for r in caplog.records if "action=token" in r.getMessage()]
    assert f"client_request_id={sent}" in line and "code=invalid_client" in line and "AADSTS" in line
    assert "not-the-secret" not in caplog.text
