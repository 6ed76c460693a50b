"""How a node proves itself to a PostgreSQL server that wants a password: the URL names a password file
(`passfile=`, as docs/nodes.md recommends, e.g. a systemd credential) and never the password itself.

Its own server (tests/support/postgres.py) with a role that must log in with SCRAM, so the rest of the
suite keeps its trust-only servers."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from scepd.config import ConfigError, check_store_url
from scepd.store.base import StoreError
from scepd.store.postgres import PostgresStore
from tests.support.postgres import PostgresServer, postgres_server

ROLE = "scepd_node"
PASSWORD = "pw-Zq8!node"  # only in the password file and the server's verifier


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as s:
        hba = s.directory / "data" / "pg_hba.conf"
        # First matching line wins: this role must use SCRAM; every other role keeps `trust`.
        hba.write_text(f"local all {ROLE} scram-sha-256\n" + hba.read_text())
        with psycopg.connect(s.url(), autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
            conn.execute("SELECT pg_reload_conf()")
        yield s


def node_url(server: PostgresServer, database: str, passfile: Path | None) -> str:
    url = f"postgresql://{ROLE}@/{database}?host={server.socket_dir}&port=5432"
    return url + (f"&passfile={passfile}" if passfile is not None else "")


def owned_database(server: PostgresServer) -> str:
    name = server.create_database()
    with psycopg.connect(server.url(name), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" OWNER TO {ROLE}')
        conn.execute(f"ALTER SCHEMA public OWNER TO {ROLE}")
    return name


def write_passfile(path: Path, server: PostgresServer, line_password: str) -> Path:
    # host:port:database:user:password; a unix socket's host is its directory.
    path.write_text(f"{server.socket_dir}:5432:*:{ROLE}:{line_password}\n")
    os.chmod(path, 0o400)  # what systemd gives a credential; libpq ignores a file others can read
    return path


async def test_a_password_file_named_in_the_url_logs_in_and_the_url_passes_the_config_check(
    server: PostgresServer, tmp_path: Path
) -> None:
    name = owned_database(server)
    url = node_url(server, name, write_passfile(tmp_path / "pgpass", server, PASSWORD))
    check_store_url(url)  # a passfile= parameter is not a password
    async with PostgresStore.open(url) as store:  # migrates as the database's owner
        await store.ping()
        who = await store.database.run(lambda conn: conn.execute("SELECT current_user AS u").fetchone())
    assert who == {"u": ROLE}
    server.drop_database(name)


@pytest.mark.parametrize("passfile", ["missing", "wrong"])
async def test_without_the_right_password_the_store_cannot_open(
    server: PostgresServer, tmp_path: Path, passfile: str
) -> None:
    """The server really asks: no file, or a wrong password in it, is refused as `cantopen`."""
    name = owned_database(server)
    path = write_passfile(tmp_path / "pgpass", server, "not-" + PASSWORD) if passfile == "wrong" else None
    with pytest.raises(StoreError) as failed:
        await PostgresStore.connect(node_url(server, name, path))
    assert failed.value.kind == "cantopen"
    assert PASSWORD not in str(failed.value)
    server.drop_database(name)


def test_a_password_in_the_url_is_refused_by_the_config_check(server: PostgresServer) -> None:
    for url in (
        f"postgresql://{ROLE}:{PASSWORD}@/db?host={server.socket_dir}",
        f"postgresql://{ROLE}@/db?host={server.socket_dir}&password={PASSWORD}",
    ):
        with pytest.raises(ConfigError, match="password"):
            check_store_url(url)


def test_psql_agrees_that_the_role_needs_its_password(server: PostgresServer) -> None:
    """A check on the fixture: without a password file the server refuses this role, so the tests above
    are about the file and not about a server that lets anyone in."""
    result = subprocess.run(
        ["psql", "-w", "-h", str(server.socket_dir), "-U", ROLE, "-d", "postgres", "-c", "SELECT 1"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"PGPASSFILE": "/nonexistent"},
    )
    assert result.returncode != 0 and "password" in result.stderr, result.stderr


async def test_a_url_with_several_hosts_reaches_the_one_that_takes_writes(
    server: PostgresServer, tmp_path: Path
) -> None:
    """Failover as docs/nodes.md describes it: libpq tries the hosts in order and, with
    target_session_attrs=read-write, keeps the first that accepts writes; a host that is gone is skipped."""
    name = owned_database(server)
    gone = tmp_path / "no-server-here"
    gone.mkdir()
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:{ROLE}:{PASSWORD}\n")
    os.chmod(passfile, 0o400)
    url = (
        f"postgresql://{ROLE}@/{name}?host={gone},{server.socket_dir}&port=5432,5432"
        f"&target_session_attrs=read-write&passfile={passfile}"
    )
    check_store_url(url)
    async with PostgresStore.open(url) as store:
        await store.ping()
        where = await store.database.run(lambda conn: conn.execute("SELECT pg_is_in_recovery() AS standby").fetchone())
    assert where == {"standby": False}
    server.drop_database(name)
