"""The `store` fixture of tests/store, once per backend: SQLite in a temporary file, and PostgreSQL on the
session's private server with a fresh database per test (`postgres_url`, tests/conftest.py). A test about
one backend's internals is marked `sqlite_only` and skipped for the other."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from scepd.store.sqlite import SqliteStore

BACKEND_NAMES = ["sqlite", "postgres"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: about the SQLite backend's own workings; not run on PostgreSQL")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is not None and spec.params.get("store") == "postgres" and item.get_closest_marker("sqlite_only"):
            item.add_marker(pytest.mark.skip(reason="about SQLite's own workings"))


@pytest.fixture(params=BACKEND_NAMES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "postgres":
        from scepd.store.postgres import PostgresStore

        url = request.getfixturevalue("postgres_url")
        async with PostgresStore.open(url) as pg:
            yield pg
    else:
        async with SqliteStore.open(tmp_path / "scepd.db") as s:
            yield s
