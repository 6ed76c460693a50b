"""A throwaway software TPM for tests: swtpm, a private D-Bus bus and tpm2-abrmd, all in one directory.

tpm2-pkcs11 needs a resource manager between it and the TPM (talking to swtpm
directly runs out of object slots after a key or two). tpm2-abrmd is that
manager, and it only talks D-Bus, so each harness runs its own bus on a
unix socket inside its directory: nothing listens on the network, nothing
touches the system bus, and every process is stopped by its PID.

    tpm = SoftwareTpm.start(tmp_path)   # swtpm + dbus-daemon + tpm2-abrmd
    tpm.env                             # what a process needs to reach it
    tpm.restart_tpm()                   # swtpm stopped and started again (state kept)
    tpm.stop()

Processes started from the main thread are also told to stop when it ends, so a
crashed test run leaves nothing running.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"
TCTI = "tabrmd:bus_type=session"
_TOOLS = ("swtpm", "dbus-daemon", "tpm2-abrmd")


def missing() -> str | None:
    """Why the TPM tests cannot run here, or None. Only a missing swtpm skips them: CI installs it
    (scripts/install.sh), so there the other parts missing is a failure, not a skip."""
    if shutil.which("swtpm") is None:
        return "swtpm is not installed (scripts/install.sh installs swtpm, tpm2-abrmd and tpm2-pkcs11)"
    return None


requires_swtpm = pytest.mark.skipif(missing() is not None, reason=missing() or "")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies, even by a crash, so no
    swtpm, bus or resource manager outlives its test run. Linux ties this to the starting THREAD, so
    it is only asked for from the main thread (a worker thread may end long before the test)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _preexec() -> Callable[[], None] | None:
    return _die_with_parent if threading.current_thread() is threading.main_thread() else None


def _wait_for(
    what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout:g} s: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.02)


@dataclass
class SoftwareTpm:
    directory: Path
    bus_address: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        return self.directory / "tpm.sock"

    @property
    def store(self) -> Path:
        """A tpm2-pkcs11 store directory for tests that do not make their own."""
        return self.directory / "store"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a process that uses the TPM through tpm2-pkcs11 or the tpm2 tools."""
        return {
            "DBUS_SESSION_BUS_ADDRESS": self.bus_address,
            "TPM2_PKCS11_TCTI": TCTI,
            "TPM2TOOLS_TCTI": TCTI,
            "TPM2_PKCS11_STORE": str(self.store),
        }

    @classmethod
    def start(cls, directory: Path) -> SoftwareTpm:
        for tool in _TOOLS:
            if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
                raise RuntimeError(f"{tool} is not installed (scripts/install.sh)")
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        (directory / "state").mkdir(exist_ok=True)
        (directory / "store").mkdir(exist_ok=True, mode=0o700)
        tpm = cls(directory)
        try:
            tpm._start_swtpm()
            tpm._start_bus()
            tpm._start_abrmd()
        except BaseException:
            tpm.stop()
            raise
        return tpm

    def _log(self, name: str) -> tuple[Path, int]:
        path = self.directory / f"{name}.log"
        return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _start_swtpm(self) -> None:
        for p in (self.socket, Path(f"{self.socket}.ctrl")):
            p.unlink(missing_ok=True)
        log, fd = self._log("swtpm")
        argv = [
            "swtpm",
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={self.directory / 'state'},mode=0600",
            "--server",
            f"type=unixio,path={self.socket},mode=0600",
            "--ctrl",
            f"type=unixio,path={self.socket}.ctrl,mode=0600",
            "--flags",
            "not-need-init,startup-clear",
        ]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, preexec_fn=_preexec())
        finally:
            os.close(fd)
        self.procs["swtpm"] = proc
        _wait_for("swtpm", lambda: self.socket.exists() and Path(f"{self.socket}.ctrl").exists(), proc, log)

    def _start_bus(self) -> None:
        bus = self.directory / "bus"
        bus.unlink(missing_ok=True)
        log, fd = self._log("dbus")
        address_file = self.directory / "bus.address"
        with open(address_file, "wb") as out:
            try:
                proc = subprocess.Popen(
                    ["dbus-daemon", "--session", f"--address=unix:path={bus}", "--nofork", "--print-address=1"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=fd,
                    preexec_fn=_preexec(),
                )
            finally:
                os.close(fd)
        self.procs["dbus"] = proc
        _wait_for("dbus-daemon", lambda: address_file.read_text().strip() != "", proc, log)
        self.bus_address = address_file.read_text().strip().splitlines()[0]

    def _start_abrmd(self) -> None:
        log, fd = self._log("abrmd")
        argv = ["tpm2-abrmd", "--session", f"--tcti=swtpm:path={self.socket}", "--flush-all"]
        if os.geteuid() == 0:
            argv.append("--allow-root")  # it refuses root otherwise; CI containers run tests as root
        env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=self.bus_address)
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=env, preexec_fn=_preexec()
            )
        finally:
            os.close(fd)
        self.procs["abrmd"] = proc

        def owned() -> bool:
            out = subprocess.run(
                [
                    "dbus-send",
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:com.intel.tss2.Tabrmd",
                ],
                env=env,
                capture_output=True,
                text=True,
            ).stdout
            return "boolean true" in out

        _wait_for("tpm2-abrmd", owned, proc, log)

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_tpm(self) -> None:
        self._stop("swtpm")

    def freeze(self) -> None:
        """SIGSTOP swtpm: calls block until `thaw` (a TPM that stops answering)."""
        self.procs["swtpm"].send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.procs["swtpm"].send_signal(signal.SIGCONT)

    def restart_tpm(self) -> None:
        """swtpm stopped and started on the same state: a TPM reset, as after a reboot or a crash.

        TPM2_Shutdown is sent first, so the restart is orderly: an unorderly one counts
        towards the TPM's dictionary-attack lockout (swtpm: 3 tries, then 1000 s), and the
        session's token must not lock out. The resource manager is restarted too, since it
        holds contexts of the old TPM.
        """
        subprocess.run(["tpm2_shutdown"], env=dict(os.environ, **self.env), capture_output=True, timeout=10)
        self._stop("abrmd")
        self._stop("swtpm")
        self._start_swtpm()
        self._start_abrmd()

    def stop(self) -> None:
        for name in ("abrmd", "dbus", "swtpm"):
            self._stop(name)


@dataclass(frozen=True)
class TpmToken:
    tpm: SoftwareTpm
    label: str
    pin: str = field(repr=False)

    def config(self, workers: int = 0, timeout: float = 30.0) -> Any:
        from scepd.keys.pkcs11.config import TokenConfig

        return TokenConfig(
            module=MODULE,
            token_label=self.label,
            pin=self.pin,
            workers=workers,
            timeout=timeout,
            tpm2_pkcs11_store=str(self.tpm.store),
            tpm2_tcti=TCTI,
        )


@pytest.fixture(scope="session")
def tpm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TpmToken]:
    """One software TPM and one token on it for the test session.

    tpm2-pkcs11 reads its store and TCTI once per process, so like SoftHSM2
    the session shares one token and tests keep apart by key label. The bus
    address goes into this process's environment, for daemons the tests start.
    """
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    from scepd.keys.tpm import create_token

    tpm = SoftwareTpm.start(tmp_path_factory.mktemp("tpm"))
    saved = {k: os.environ.get(k) for k in tpm.env}
    try:
        os.environ.update(tpm.env)
        token = TpmToken(tpm, "scepd-test", secrets.token_urlsafe(12))
        create_token(token.label, secrets.token_urlsafe(12), token.pin, module=MODULE, store=str(tpm.store), tcti=TCTI)
        yield token
    finally:
        tpm.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
