"""Shared fixtures: one SoftHSM2 token per test session (see tests/softhsm.py), a fresh SQLite store,
and the in-memory CA and chain terminal of tests/challenge/pki.py."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from scepd.store.sqlite import SqliteStore
from tests.challenge.pki import Ca, Terminal
from tests.softhsm import SoftHsmToken, make_token
from tests.tpm import tpm_token  # noqa: F401 - the session's software TPM (one per process)


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
    from scepd.keys.pkcs11 import TokenConfig

    def make(workers: int = 0) -> TokenConfig:
        return TokenConfig(
            module=softhsm_token.module,
            token_label=softhsm_token.label,
            pin=softhsm_token.pin,
            workers=workers,
            softhsm2_conf=str(softhsm_token.conf),
        )

    return make


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore.open(tmp_path / "scepd.db") as s:
        yield s


@pytest.fixture(scope="session")
def ca() -> Ca:
    return Ca()


@pytest.fixture
def terminal(ca: Ca) -> Terminal:
    return Terminal(ca)
