"""Every Entra, Graph and Intune call goes through `intune.proxy`: a real tinyproxy on loopback.

The fake Intune sees tinyproxy's Via header on every request it gets, and with the wrong
proxy credentials nothing reaches it at all (no call goes around the proxy).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scepd.intune.auth import ClientSecret
from scepd.intune.client import IntuneClient, RevocationResult
from scepd.intune.contract import RevocationErrorCode
from scepd.intune.errors import IntuneError
from scepd.intune.http import http_client
from tests.intune.conftest import settings_for
from tests.support.fake_intune.helpers import make_csr
from tests.support.fake_intune.state import FakeIntune
from tests.support.tinyproxy import VIA_NAME, tinyproxy


async def every_kind_of_call(client: IntuneClient, fake: FakeIntune) -> None:
    challenge = fake.mint_challenge("CN=device", ttl=600)
    csr = make_csr("CN=device", challenge)
    assert (await client.validate("tid-proxy", csr)).success
    context = fake.queue_revocation("0A", issuer_name="CN=scepd CA")
    [request] = await client.download_revocations(10, "CN=scepd CA")
    assert request.request_context == context
    await client.upload_revocation_results(
        [RevocationResult(context, RevocationErrorCode.CERTIFICATE_NOT_FOUND_ERROR, "not ours")]
    )


async def test_every_intune_call_goes_through_the_proxy(
    fake_intune: FakeIntune, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An environment proxy must not win over the explicit setting, nor NO_PROXY let loopback bypass it.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with tinyproxy(tmp_path / "proxy") as proxy:
        async with http_client(proxy=proxy.url, proxy_credentials=f"{proxy.user}:{proxy.password}") as http:
            client = IntuneClient(settings_for(fake_intune), ClientSecret(fake_intune.client_secret or ""), http)
            await every_kind_of_call(client, fake_intune)
        logged = proxy.requests()
    calls = fake_intune.calls()
    assert {c.route for c in calls} >= {"token", "discovery", "validate", "download", "upload"}
    assert all(VIA_NAME in c.headers.get("via", "") for c in calls), [(c.route, c.headers) for c in calls]
    assert len(logged) == len(calls)  # each of them passed through tinyproxy, and nothing else did


async def test_wrong_proxy_credentials_reach_nothing(fake_intune: FakeIntune, tmp_path: Path) -> None:
    with tinyproxy(tmp_path / "proxy") as proxy:
        async with http_client(proxy=proxy.url, proxy_credentials=f"{proxy.user}:wrong") as http:
            client = IntuneClient(settings_for(fake_intune), ClientSecret(fake_intune.client_secret or ""), http)
            with pytest.raises(IntuneError):  # tinyproxy refuses (407, or drops the connection)
                await client.validate("tid-proxy", make_csr("CN=device", "x"))
    assert fake_intune.calls() == []


async def test_a_refusal_that_is_not_entras_json_is_an_intune_error(fake_intune: FakeIntune) -> None:
    """A 401 whose body is a proxy's HTML page (tinyproxy answers so, now and then, to wrong proxy
    credentials) ends as IntuneAuthError, not as an IndexError from reading its description."""
    fake_intune.fail("token", 401, body=b"<html>Unauthorized</html>")
    async with http_client() as http:
        client = IntuneClient(settings_for(fake_intune), ClientSecret(fake_intune.client_secret or ""), http)
        with pytest.raises(IntuneError):
            await client.validate("tid-html", make_csr("CN=device", "x"))
