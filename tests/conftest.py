"""Shared fixtures: one SoftHSM2 token per test session (see tests/support/softhsm.py), a fresh SQLite store,
a fresh PostgreSQL database (`postgres_url`) on a server started once per session, and the in-memory CA
and chain terminal of tests/support/pki.py."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from scepd.store.sqlite import SqliteStore
from tests.support.pki import Ca, Terminal
from tests.support.postgres import PostgresServer, postgres_server
from tests.support.softhsm import SoftHsmToken, make_token
from tests.support.tpm import tpm_token  # noqa: F401 - the session's software TPM (one per process)


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmToken]:
    token = make_token(tmp_path_factory.mktemp("softhsm"))
    # Before any pkcs11.lib() load in this process; worker processes inherit it.
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(token.conf)
    yield token
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old


@pytest.fixture(scope="session")
def token_config(softhsm_token: SoftHsmToken):  # type: ignore[no-untyped-def]
    """`token_config(workers=0)` -> a TokenConfig for the session token; `TokenPool.open(...)` it."""
    from scepd.keys.pkcs11.config import TokenConfig

    def make(workers: int = 0) -> TokenConfig:
        return TokenConfig(
            module=softhsm_token.module,
            token_label=softhsm_token.label,
            pin=softhsm_token.pin,
            workers=workers,
            softhsm2_conf=str(softhsm_token.conf),
        )

    return make


@pytest.fixture(scope="session")
def ca_key_labels(token_config):  # type: ignore[no-untyped-def]
    """Labels of keys on the session token for CA-level tests, made once (RSA generation on the token is
    slow): "ec" (P-256) and "rsa" (RSA-2048) sign only, "ra" (RSA-2048) also opens envelopes."""
    from scepd.keys.pkcs11.pool import generate_key

    labels = {}
    for kind in ("ec", "rsa", "ra"):
        labels[kind] = f"ca-tests-{kind}-{uuid.uuid4().hex[:8]}"
        generate_key(token_config(), labels[kind], "ec" if kind == "ec" else "rsa", size=2048, decrypt=kind == "ra")
    return labels


@pytest.fixture
async def token_pool(token_config, ca_key_labels):  # type: ignore[no-untyped-def]
    """A pool (one token thread) on the session token, where the keys of `ca_key_labels` are."""
    from scepd.keys.pkcs11.pool import TokenPool

    async with TokenPool.open(token_config()) as pool:
        yield pool


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore.open(tmp_path / "scepd.db") as s:
        yield s


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the session (so one per xdist worker), started on first use.
    Tests that stop, restart or freeze a server start their own instead (`postgres_server()`)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test: tests/store's `store`
    fixture opens it, e2e tests hand it to `init_state(..., store_url=...)`."""
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)


@pytest.fixture(scope="session")
def ca() -> Ca:
    return Ca()


@pytest.fixture
def terminal(ca: Ca) -> Terminal:
    return Terminal(ca)
