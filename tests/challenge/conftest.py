from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scepd.store.sqlite import SqliteStore
from tests.challenge.pki import Ca, Terminal


@pytest.fixture(scope="session")
def ca() -> Ca:
    return Ca()


@pytest.fixture
def terminal(ca: Ca) -> Terminal:
    return Terminal(ca)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore.open(tmp_path / "scepd.db") as s:
        yield s
