"""Several serving processes on one port (`server.processes`).

One Python process tops out near one core: the event loop runs HTTP, the
codec and the pipeline, and its GIL is shared with the token thread and the
store's threads, and a token call waits for the GIL to return
(docs/benchmarks.md, "The GIL and the token thread"). So the primary process, the one systemd
starts, binds one socket per process on the one port and starts
`processes - 1` fresh interpreters (`scepd serve --serving-fd`, never a
fork), each accepting on its own socket. Each has its own token pool (one
module instance per process, as scepd.keys.pkcs11.session requires), its own store
connection (SQLite serialises writers) and its own Intune client. `scepd
init` writes one serving process per core (docs/benchmarks.md says why).

The primary alone runs the background loops (CA expiry; CRL signing and the
Intune revocation sync while its node holds the leader lease, scepd.leadership),
the metrics listener (summing every process through
prometheus-client's multiprocess files) and talks to systemd. It restarts a
serving process that dies, and passes SIGHUP and SIGTERM on. Each serving
process holds one end of a socketpair: it writes one byte once it accepts
connections, and shuts down gracefully when the primary's end closes, so a
primary killed outright leaves no orphans serving.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import trio
from prometheus_client import multiprocess

from scepd.logs import event

log = logging.getLogger("scepd")

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_OWNED_ENV = "SCEPD_METRICS_DIR_OWNED"  # the primary made the directory and removes it at exit
_NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", _OWNED_ENV)
START_TIMEOUT = 60.0
RESTART_DELAY = 1.0


def metrics_directory() -> tuple[Path, bool]:
    """Where the processes keep their metric files: $RUNTIME_DIRECTORY/metrics under systemd, else a temp dir."""
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime:
        path = Path(runtime.split(":")[0]) / "metrics"
        path.mkdir(mode=0o700, exist_ok=True)
        for old in path.glob("*.db"):  # a previous run's values must not be summed in
            old.unlink()
        return path, False
    return Path(tempfile.mkdtemp(prefix="scepd-metrics-")), True


def reexec_for_metrics(argv: list[str]) -> None:
    """Restart this command with PROMETHEUS_MULTIPROC_DIR set, which prometheus-client reads at import.

    exec keeps the PID, so systemd's main process stays the same.
    """
    path, owned = metrics_directory()
    os.environ[METRICS_DIR_ENV] = str(path)
    if owned:
        os.environ[_OWNED_ENV] = "1"
    os.execv(sys.executable, [sys.executable, "-m", "scepd", *argv])


def remove_metrics_directory() -> None:
    path = os.environ.get(METRICS_DIR_ENV)
    if path and os.environ.get(_OWNED_ENV):
        for f in Path(path).glob("*.db"):
            f.unlink(missing_ok=True)
        try:
            os.rmdir(path)
        except OSError:
            pass


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """One listening socket per process, all on one port (SO_REUSEPORT); port 0 picks one for all.

    The kernel spreads new connections over the sockets by their addresses. One
    socket shared by every process would not: a process woken first takes every
    connection queued at that moment, so a handful of keep-alive clients could
    all land on one process (docs/benchmarks.md, "Serving processes: a socket
    each"). The primary keeps every
    socket open, so connections queued for a serving process that died wait
    for its successor.
    """
    family, type_, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            address = sock.getsockname()  # the port the first one got, for the others
            sock.listen(1024)
            sock.set_inheritable(True)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class ServingProcesses:
    """The primary's view of the serving processes beside it."""

    def __init__(self, config_path: Path, sockets: list[socket.socket]) -> None:
        self._config_path, self._sockets = config_path, sockets
        self._procs: dict[int, trio.Process] = {}
        self._stopping = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start them all, report started once each accepts, then keep them running."""
        async with trio.open_nursery() as nursery:
            for n in range(1, len(self._sockets) + 1):
                await nursery.start(self._keep, n)
            task_status.started()

    def reload(self) -> None:
        self._signal(signal.SIGHUP)

    def stop(self) -> None:
        """Graceful: each drains its connections, as the primary does."""
        self._stopping = True
        self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.send_signal(signum)

    async def _keep(self, n: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while not self._stopping:
            try:
                proc, control = await self._start(n)
            except (OSError, RuntimeError) as e:
                if not started:
                    raise RuntimeError(f"serving process {n} did not start: {e}") from e
                event(log, logging.ERROR, "serving_process_start_failed", n=n, error=str(e))
                await trio.sleep(RESTART_DELAY)
                continue
            if not started:
                task_status.started()
                started = True
            try:
                await proc.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await self._reap(proc)
                    control.close()
                    del self._procs[n]
                    multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
            if not self._stopping:
                event(log, logging.ERROR, "serving_process_exited", n=n, pid=proc.pid, returncode=proc.returncode)
                await trio.sleep(RESTART_DELAY)

    async def _start(self, n: int) -> tuple[trio.Process, socket.socket]:
        listener = self._sockets[n - 1]
        parent, child = socket.socketpair()
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        argv = [
            sys.executable,
            "-m",
            "scepd",
            "serve",
            "--config",
            str(self._config_path),
            "--serving-fd",
            str(listener.fileno()),
            "--control-fd",
            str(child.fileno()),
        ]
        try:
            proc = await trio.lowlevel.open_process(
                argv, pass_fds=(listener.fileno(), child.fileno()), env=env, stdin=subprocess.DEVNULL
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self._procs[n] = proc
        parent.setblocking(False)
        with trio.move_on_after(START_TIMEOUT):
            await trio.lowlevel.wait_readable(parent)
            if parent.recv(1) == b"r":
                event(log, logging.INFO, "serving_process_started", n=n, pid=proc.pid)
                return proc, parent
        parent.close()
        await self._reap(proc)
        del self._procs[n]
        raise RuntimeError(
            f"pid {proc.pid} exited or did not accept within {START_TIMEOUT:.0f} s (returncode {proc.returncode})"
        )

    async def _reap(self, proc: trio.Process) -> None:
        if proc.returncode is None:
            proc.terminate()
            with trio.move_on_after(20):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def report_ready(control: trio.socket.SocketType) -> None:
    """In a serving process: tell the primary it accepts connections."""
    await control.send(b"r")


async def wait_for_primary(control: trio.socket.SocketType, shutdown: trio.Event) -> None:
    """In a serving process: shut down gracefully when the primary's end of the socketpair closes."""
    while await control.recv(64):
        pass
    if not shutdown.is_set():
        event(log, logging.WARNING, "primary_gone", pid=os.getpid())
        shutdown.set()
