"""Fixtures for the Intune client tests: the fake Intune over loopback HTTP and a real
IntuneClient (httpx, client secret) pointed at it, with short timeouts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from scepd.intune.auth import ClientSecret, Credential, TokenSource
from scepd.intune.client import IntuneClient
from scepd.intune.retry import RetryPolicy
from scepd.intune.settings import IntuneSettings
from tests.support.fake_intune.fixtures import fake_intune  # noqa: F401  (a fixture)
from tests.support.fake_intune.state import FakeIntune


def settings_for(fake: FakeIntune, **changes: object) -> IntuneSettings:
    values: dict[str, object] = {
        "tenant": fake.tenant,
        "client_id": fake.client_id,
        "authority": fake.authority,
        "graph_url": fake.graph_url,
        "intune_resource_url": fake.intune_resource_url,
        "timeout": 2.0,
        "retries": 0,
        "backoff": 0.01,
    }
    values.update(changes)
    return IntuneSettings(**values)  # type: ignore[arg-type]


def tokens_for(fake: FakeIntune, http: httpx.AsyncClient, credential: Credential) -> TokenSource:
    """An Entra token source for the fake's tenant and app, without retries: one refusal is the answer."""
    return TokenSource(
        http,
        authority=fake.authority,
        tenant=fake.tenant,
        client_id=fake.client_id,
        credential=credential,
        retry=RetryPolicy(retries=0),
    )


@pytest.fixture
async def intune(fake_intune: FakeIntune) -> AsyncIterator[IntuneClient]:  # noqa: F811
    async with httpx.AsyncClient() as http:
        yield IntuneClient(settings_for(fake_intune), ClientSecret(fake_intune.client_secret or ""), http)
