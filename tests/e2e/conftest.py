from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.daemon import Daemon, init_state, running
from tests.support.scep_client import Client, connected

CHALLENGE = "e2e-static-challenge-7Qx"


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """scepd as `scepd init` makes it (sign-only CA key, RA key for envelopes and replies), static challenge."""
    state = tmp_path_factory.mktemp("scepd-ca")
    init_state(state, CHALLENGE)
    with running(state, CHALLENGE) as d:
        yield d
    assert "Traceback" not in d.log(), d.log()


@pytest.fixture(scope="session")
def daemon_ra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The default CA + RA layout with 2 token workers, and single DES allowed for legacy clients,
    as NDES deployments often must."""
    state = tmp_path_factory.mktemp("scepd-ra")
    init_state(state, CHALLENGE, workers=2, extra_toml="[scep]\nallow_single_des = true\n")
    with running(state, CHALLENGE) as d:
        yield d
    assert "Traceback" not in d.log(), d.log()


@pytest.fixture(scope="session")
def daemon_legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A state directory of an earlier version: a lone CA key that also opens envelopes (no RA).
    It accepts single-DES envelopes, for legacy clients such as micromdm's scepclient 2.1
    (its Go pkcs7 encrypts with DES-CBC whatever GetCACaps says)."""
    state = tmp_path_factory.mktemp("scepd-legacy")
    init_state(state, CHALLENGE, no_ra=True, extra_toml="[scep]\nallow_single_des = true\n")
    with running(state, CHALLENGE) as d:
        yield d
    assert "Traceback" not in d.log(), d.log()


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[Client]:
    async with connected(daemon.url) as c:
        yield c


@pytest.fixture
async def legacy_client(daemon_legacy: Daemon) -> AsyncIterator[Client]:
    async with connected(daemon_legacy.url) as c:
        yield c


@pytest.fixture
async def ra_client(daemon_ra: Daemon) -> AsyncIterator[Client]:
    async with connected(daemon_ra.url) as c:
        yield c


SID_PREFIX = "tag:microsoft.com,2022-09-14:sid:"
LIFECYCLE_TOML = f"""
[endpoints.strict]
path = "/strict"
challenge = "static"
profile = "strict"

[endpoints.trim]
path = "/trim"
challenge = "static"
profile = "trim"

[endpoints.held]
path = "/held"
challenge = "static"
profile = "held"

[endpoints.brief]
path = "/brief"
challenge = "static"
profile = "brief"

[profiles.strict]
type = "device"
validity_days = 30
key_usage = ["digital_signature"]
extended_key_usage = ["1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.1"]
subject_accept = ["CN"]
subject_suffix = "O=scepd e2e,C=DE"
san_accept = ["dns", "uri"]
san_uri_prefixes = ["{SID_PREFIX}"]
csr_hashes = ["sha256", "sha384", "sha512"]

[profiles.trim]
type = "user"
subject_accept = ["CN"]
san_accept = ["upn", "email", "uri"]
on_disallowed = "trim"
revoke_superseded = true

[profiles.held]
approval = true

[profiles.brief]
approval = true
pending_ttl_hours = 0.0004
"""


@pytest.fixture(scope="session")
def daemon_lifecycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """scepd with endpoints whose profiles restrict names, trim, and hold requests for approval."""
    state = tmp_path_factory.mktemp("scepd-lifecycle")
    init_state(state, CHALLENGE, extra_toml=LIFECYCLE_TOML)
    with running(state, CHALLENGE) as d:
        yield d
    assert "Traceback" not in d.log(), d.log()


async def lifecycle_client(daemon: Daemon, path: str, http: httpx.AsyncClient) -> Client:
    c = Client(daemon.base_url + path, http)
    await c.get_ca_cert()
    return c
