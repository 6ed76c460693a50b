"""`[store] path` or `[store] url` chooses the backend, and `open_store` opens what was chosen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from scepd.challenge.onetime import challenge_digest
from scepd.config import ConfigError, parse
from scepd.store.backends import open_store
from scepd.store.postgres import PostgresStore
from scepd.store.sqlite import SqliteStore
from tests.store.test_sqlite import NOW, record

BASE: dict[str, Any] = {
    "token": {"label": "scepd", "pin": "file:secrets/pin"},
    "ca": {"key": "pkcs11:object=ca", "certificate": "ca.pem"},
    "challenge": {"static": "env:SCEPD_CHALLENGE"},
}
CONFIG = Path("/etc/scepd/scepd.toml")


def config_with(store: dict[str, Any]) -> Any:
    return parse({**BASE, "store": store}, CONFIG)


def test_path_is_the_sqlite_file() -> None:
    config = config_with({"path": "db.sqlite3"})
    assert (config.store_path, config.store_url) == (Path("/etc/scepd/db.sqlite3"), None)
    assert config.store_location == Path("/etc/scepd/db.sqlite3")


def test_url_is_a_postgresql_database() -> None:
    url = "postgresql://scepd@db.example.net/scepd?sslmode=verify-full"
    config = config_with({"url": url})
    assert (config.store_path, config.store_url, config.store_location) == (None, url, url)


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ({}, "exactly one"),
        ({"path": "db.sqlite3", "url": "postgresql://scepd@db/scepd"}, "exactly one"),
        ({"url": "mysql://scepd@db/scepd"}, "postgresql:// URL"),
        ({"url": "postgresql://scepd:hunter2@db/scepd"}, "password"),
        ({"url": "postgresql://scepd@db/scepd?password=hunter2"}, "password"),
    ],
)
def test_store_settings_that_are_refused(store: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_with(store)


def test_a_url_without_the_driver_installed_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """An appliance installed without the `postgres` extra: the config check names it, instead of an
    ImportError at the first connection (daemon start-up, every CLI command, `store copy --to`)."""
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what find_spec reports for a module that is not there
    with pytest.raises(ConfigError, match=r"psycopg.*scepd\[postgres\]"):
        config_with({"url": "postgresql://scepd@db.example.net/scepd"})
    assert config_with({"path": "db.sqlite3"}).store_url is None  # SQLite never needs it


async def test_open_store_follows_the_location(tmp_path: Path, postgres_url: str) -> None:
    async with open_store(tmp_path / "s.db") as store:
        assert isinstance(store, SqliteStore)
    async with open_store(postgres_url) as store:
        assert isinstance(store, PostgresStore)
        await store.put_issued(record(1))
        assert (await store.counts(NOW)).certificates["valid"] == 1


async def test_the_cli_mints_a_challenge_into_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """A real `scepd challenge mint` process, configured with `[store] url`, writes to the database."""
    config = tmp_path / "scepd.toml"
    config.write_text(
        '[token]\nlabel = "scepd"\npin = "env:SCEPD_UNUSED_PIN"\n'
        '[ca]\nkey = "pkcs11:object=ca"\ncertificate = "ca.pem"\n'
        '[challenge]\nstatic = "env:SCEPD_UNUSED"\n'
        f'[store]\nurl = "{postgres_url}"\n'
    )
    done = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "scepd", "challenge", "mint", "--config", str(config), "--note", "cli"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    )
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    async with PostgresStore.open(postgres_url) as store:
        assert await store.consume_challenge(challenge_digest(secret), NOW) is True
        assert await store.consume_challenge(challenge_digest(secret), NOW) is False
