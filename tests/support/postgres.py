"""A real PostgreSQL server for tests: Debian's postgresql-15, initialised in a temporary directory,
listening only on a unix socket in that directory (no TCP at all), stopped by its PID.

One server per test session (so one per xdist worker: each worker is its own session); each test
gets a fresh database on it (`PostgresServer.create_database`), dropped afterwards.

PostgreSQL refuses to run as root. When the tests run as root (the CI machine, this one), the
server runs as the `postgres` account the Debian package creates, in a directory handed to it;
the tests, as root, can still reach the socket.

Nothing here needs pytest: bench/pg_store.py starts its server the same way. A server that cannot
be started raises `PostgresUnavailable`, which a fixture reports as an error like any other.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VERSION = "15"
BIN = Path(f"/usr/lib/postgresql/{VERSION}/bin")
PORT = 5432  # names the socket file (.s.PGSQL.5432) only: nothing listens on TCP
SUPERUSER = "scepd"


class PostgresUnavailable(RuntimeError):
    """The private server could not be set up or started (missing package, no account, startup failure)."""


class PostgresServer:
    """The running server: where it is, its process, and how to stop and start it again on the same data."""

    def __init__(self, directory: Path, user: str | None) -> None:
        self.directory = directory  # data directory, socket and log live under it
        self.user = user
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def socket_dir(self) -> Path:
        return self.directory / "sock"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def url(self, database: str = "postgres") -> str:
        """A libpq URL that reaches the server over its unix socket."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={PORT}"

    def create_database(self) -> str:
        """A new empty database; its name."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def start(self) -> None:
        (self.directory / "data" / "standby.signal").unlink(missing_ok=True)  # left by start_refusing
        self._spawn()
        _wait(self, self.proc, self.log)

    def start_refusing(self) -> None:
        """Start the server as a standby with hot_standby off: it runs, and refuses every connection with
        57P03 ("the database system is not accepting connections"), as a server starting up or replaying
        its WAL does. Returns once it answers so; `stop` and `start` make it an ordinary server again."""
        signal_file = self.directory / "data" / "standby.signal"
        signal_file.touch()
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            os.chown(signal_file, account.pw_uid, account.pw_gid)
        self._spawn("-c", "hot_standby=off")
        _wait(self, self.proc, self.log, refusing=True)

    def _spawn(self, *settings: str) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(BIN / "postgres"),
                    "-D",
                    str(self.directory / "data"),
                    "-k",
                    str(self.socket_dir),
                    "-p",
                    str(PORT),
                    "-c",
                    "listen_addresses=",  # unix socket only
                    "-c",
                    "max_connections=60",
                    "-c",
                    "shared_buffers=16MB",
                    *settings,
                ],
                user=self.user,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self.proc

    def stop(self) -> None:
        """Fast shutdown (SIGINT): sessions are ended, the server checkpoints and exits."""
        if self.proc is not None:
            _stop(self.proc)

    def processes(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, WAL writer...)."""
        assert self.pid is not None, "the server is not running"
        children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == self.pid]
        return [self.pid, *children]


def _parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(") ", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):  # gone meanwhile
        return None


@contextmanager
def frozen(pids: list[int], *, thaw_after: float | None = None) -> Iterator[None]:
    """SIGSTOP `pids` (a server that hangs, as a client sees it: sockets open, no answer) and SIGCONT
    them when the block ends, whatever happens in it.

    `thaw_after` also thaws them from a timer after that many seconds: a call that cannot be abandoned
    would otherwise wait for the thaw, so a missing bound fails the test on timing instead of hanging it."""

    def thaw() -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    timer = threading.Timer(thaw_after, thaw) if thaw_after is not None else None
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        if timer is not None:
            timer.start()
        yield
    finally:
        if timer is not None:
            timer.cancel()
        thaw()


def _run_as() -> tuple[str | None, int | None, int | None]:
    """The account the server runs as: ours, unless we are root (then Debian's `postgres`)."""
    if os.geteuid() != 0:
        return None, None, None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root and there is no `postgres` account (scripts/install.sh installs postgresql)"
        ) from None
    return account.pw_name, account.pw_uid, account.pw_gid


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a private server; stop it (fast shutdown, then SIGKILL) and remove its files at the end."""
    if not (BIN / "postgres").exists():
        raise PostgresUnavailable(f"{BIN}/postgres is missing (scripts/install.sh installs postgresql)")
    user, uid, gid = _run_as()
    # Not under pytest's tmp_path: that is mode 0700 for root, which the `postgres` account cannot enter.
    directory = Path(tempfile.mkdtemp(prefix="scepd-pg-"))
    data, sock, log = directory / "data", directory / "sock", directory / "server.log"
    sock.mkdir()
    if uid is not None and gid is not None:
        for path in (directory, sock):
            os.chown(path, uid, gid)
    server = PostgresServer(directory, user)
    try:
        subprocess.run(
            [str(BIN / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-instructions"],
            user=user,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        log.touch()
        if uid is not None and gid is not None:
            os.chown(log, uid, gid)
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _wait(server: PostgresServer, proc: subprocess.Popen[bytes], log: Path, *, refusing: bool = False) -> None:
    """Until the server accepts connections; with `refusing`, until it answers that it does not (a standby
    with hot_standby off, which must never let a connection in)."""
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise PostgresUnavailable(
                f"postgres exited with {proc.returncode}: {log.read_text(errors='replace')[-1000:]}"
            )
        try:
            psycopg.connect(server.url(), connect_timeout=2).close()
        except psycopg.OperationalError as e:
            if refusing and "not accepting connections" in str(e):
                return
            failure: Exception = e
        else:
            if not refusing:
                return
            _stop(proc)
            raise PostgresUnavailable("the standby accepted a connection with hot_standby off")
        if time.monotonic() > deadline:
            _stop(proc)
            what = "start refusing" if refusing else "accept connections"
            raise PostgresUnavailable(
                f"postgres did not {what}: {log.read_text(errors='replace')[-1000:]}"
            ) from failure
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT is PostgreSQL's fast shutdown: sessions are ended, the server checkpoints and exits."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
