"""The Intune client's one retry policy, against the fake Intune on loopback with its failure modes:
what is retried and how often, how long it waits, when the access token is fetched again, and what is
never retried. Short backoffs keep it fast; the waits are measured, not assumed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from scepd.intune.auth import ClientSecret
from scepd.intune.client import IntuneClient
from scepd.intune.errors import IntuneHttpError, IntuneTransportError
from tests.intune.conftest import settings_for
from tests.support.fake_intune.helpers import make_csr
from tests.support.fake_intune.state import FakeIntune

BACKOFF = 0.05


@pytest.fixture
async def patient(fake_intune: FakeIntune) -> AsyncIterator[IntuneClient]:
    """A client that retries twice, with backoff 0.05 s doubling and Retry-After capped at 0.3 s."""
    settings = settings_for(fake_intune, retries=2, backoff=BACKOFF, max_retry_after=0.3)
    async with httpx.AsyncClient() as http:
        yield IntuneClient(settings, ClientSecret(fake_intune.client_secret or ""), http)


def csr(fake: FakeIntune) -> bytes:
    return make_csr("CN=device", fake.mint_challenge("CN=device", ttl=600))


async def test_a_5xx_is_retried_and_the_later_answer_counts(patient: IntuneClient, fake_intune: FakeIntune) -> None:
    fake_intune.fail("validate", 503, times=2)
    verdict = await patient.validate("tid-5xx", csr(fake_intune))
    assert verdict.success, verdict
    assert [c.status for c in fake_intune.calls("validate")] == [503, 503, 200]


async def test_retries_end_with_the_last_error_after_doubling_pauses(
    patient: IntuneClient, fake_intune: FakeIntune
) -> None:
    fake_intune.fail("validate", 500, times=None)
    started = trio.current_time()
    with pytest.raises(IntuneHttpError) as failed:
        await patient.validate("tid-500", csr(fake_intune))
    assert failed.value.status == 500
    assert len(fake_intune.calls("validate")) == 3  # the first attempt and two retries
    assert trio.current_time() - started >= BACKOFF + 2 * BACKOFF


async def test_429_waits_for_retry_after_up_to_the_cap(patient: IntuneClient, fake_intune: FakeIntune) -> None:
    fake_intune.fail("validate", 429, retry_after=60)  # capped at max_retry_after (0.3 s)
    started = trio.current_time()
    with trio.fail_after(10):
        assert (await patient.validate("tid-429", csr(fake_intune))).success
    assert 0.3 <= trio.current_time() - started < 5
    assert [c.status for c in fake_intune.calls("validate")] == [429, 200]


@pytest.mark.parametrize("status", [400, 403])
async def test_a_client_error_is_not_retried(patient: IntuneClient, fake_intune: FakeIntune, status: int) -> None:
    await patient.validate("tid-warm", csr(fake_intune))
    fake_intune.fail("validate", status)
    with pytest.raises(IntuneHttpError) as failed:
        await patient.validate("tid-4xx", csr(fake_intune))
    assert failed.value.status == status
    assert [c.status for c in fake_intune.calls("validate")][1:] == [status]


async def test_a_404_looks_the_service_up_again_once(patient: IntuneClient, fake_intune: FakeIntune) -> None:
    """A discovered URL that 404s may have moved: discovery is asked again, and the call retried once."""
    await patient.validate("tid-warm", csr(fake_intune))
    lookups = len(fake_intune.calls("discovery"))
    fake_intune.fail("validate", 404)
    assert (await patient.validate("tid-404", csr(fake_intune))).success
    assert len(fake_intune.calls("discovery")) == lookups + 1
    assert [c.status for c in fake_intune.calls("validate")][1:] == [404, 200]
    fake_intune.fail("validate", 404, times=None)
    with pytest.raises(IntuneHttpError) as failed:
        await patient.validate("tid-404-again", csr(fake_intune))
    assert failed.value.status == 404
    assert [c.status for c in fake_intune.calls("validate")][3:] == [404, 404]


async def test_a_401_fetches_one_new_token_and_tries_again_once(patient: IntuneClient, fake_intune: FakeIntune) -> None:
    await patient.validate("tid-warm", csr(fake_intune))
    tokens = len(fake_intune.calls("token"))
    fake_intune.expire_tokens()  # Intune now refuses the cached token
    assert (await patient.validate("tid-401", csr(fake_intune))).success
    assert len(fake_intune.calls("token")) > tokens  # (Graph's token, for discovery, may be renewed too)
    assert [c.status for c in fake_intune.calls("validate")][1:] == [401, 200]

    # A 401 that a fresh token does not cure is not chased further.
    fake_intune.fail("validate", 401, times=None)
    with pytest.raises(IntuneHttpError) as failed:
        await patient.validate("tid-401-again", csr(fake_intune))
    assert failed.value.status == 401
    assert [c.status for c in fake_intune.calls("validate")][3:] == [401, 401]


async def test_a_dropped_connection_is_retried_then_reported_as_transport(
    patient: IntuneClient, fake_intune: FakeIntune
) -> None:
    fake_intune.drop("validate")
    assert (await patient.validate("tid-drop", csr(fake_intune))).success
    fake_intune.drop("validate", times=None)
    with pytest.raises(IntuneTransportError):
        await patient.validate("tid-drop-always", csr(fake_intune))
