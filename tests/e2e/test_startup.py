"""Start-up failures of a real `scepd serve`: one line naming the cause, its own exit code, no traceback;
and several processes on one SoftHSM2 token while a daemon serves load (an overlapping restart, admin
commands): every one of them starts."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from scepd.errors import ExitCode
from scepd.scep.constants import PkiStatus
from tests.support.daemon import REPO, Daemon, init_state, running, scepd
from tests.support.scep_client import Client

CHALLENGE = "startup-static-challenge"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("scepd-startup")
    init_state(state, CHALLENGE, workers=2)
    return state


def _variant(
    state: Path, name: str, old: str, new: str, workers: int = 0, also: tuple[tuple[str, str], ...] = ()
) -> Path:
    """scepd.toml with `old` (and each pair of `also`) replaced; one token thread unless `workers`
    (fewer processes on 2 cores)."""
    text = (state / "scepd.toml").read_text().replace("workers = 2\n", f"workers = {workers}\n")
    for before, after in ((old, new), *also):
        assert before in text, before
        text = text.replace(before, after)
    path = state / f"{name}.toml"
    path.write_text(text)
    return path


def test_each_startup_failure_ends_with_one_line_and_its_own_exit_code(state: Path, tmp_path: Path) -> None:
    (state / "secrets" / "wrong.pin").write_text("not-the-pin\n")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[server\n")
    cases: dict[str, tuple[Path, tuple[str, ...], ExitCode, str]] = {
        "wrong PIN": (
            _variant(state, "wrong-pin", "file:secrets/token.pin", "file:secrets/wrong.pin"),
            (),
            ExitCode.PIN_INCORRECT,
            "the PIN was refused",
        ),
        # A token worker process reports the same way as the in-process token thread.
        "wrong PIN, worker process": (
            _variant(state, "wrong-pin-2", "file:secrets/token.pin", "file:secrets/wrong.pin", workers=2),
            (),
            ExitCode.PIN_INCORRECT,
            "the PIN was refused",
        ),
        # The key URIs name the token too (a URI naming another token is a config error, exit 4).
        "missing token": (
            _variant(
                state,
                "no-token",
                'label = "scepd"',
                'label = "no-such-token"',
                also=(("token=scepd;", "token=no-such-token;"),),
            ),
            (),
            ExitCode.TOKEN_NOT_FOUND,
            "no such token",
        ),
        "missing key": (
            _variant(state, "no-key", "object=scepd-ca;", "object=no-such-key;"),
            (),
            ExitCode.KEY_MISSING,
            "no private key labelled 'no-such-key'",
        ),
        "missing PIN file": (
            _variant(state, "no-pin", "file:secrets/token.pin", "file:secrets/gone.pin"),
            (),
            ExitCode.CONFIG_UNREADABLE,
            "gone.pin",
        ),
        "missing config": (state / "absent.toml", (), ExitCode.CONFIG_UNREADABLE, "file not found"),
        "unreadable config": (state, (), ExitCode.CONFIG_UNREADABLE, "Is a directory"),
        "invalid config": (bad_toml, (), ExitCode.CONFIG_INVALID, "not valid TOML"),
        "token worker cannot start": (
            _variant(
                state,
                "no-softhsm-conf",
                'softhsm2_conf = "softhsm/softhsm2.conf"',
                'softhsm2_conf = "softhsm/absent.conf"',
                workers=1,
            ),
            (),
            ExitCode.TOKEN_WORKER,
            "the token worker could not start",
        ),
        "port in use": (
            _variant(state, "port", "[server]", "[server]"),
            ("--listen", f"127.0.0.1:{port}"),
            ExitCode.LISTEN,
            f"cannot listen on 127.0.0.1:{port} (SCEP): Address already in use",
        ),
    }
    try:
        # All at once: they share the token, which the token lock makes safe.
        procs = {}
        for name, (config, extra, _, _) in cases.items():
            proc = subprocess.Popen(
                [sys.executable, "-m", "scepd", "serve", "--config", str(config), *extra],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            procs[name] = proc
        results = {name: (proc.wait(60), *proc.communicate()) for name, proc in procs.items()}
    finally:
        busy.close()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    assert len({code for _, _, code, _ in cases.values()}) == 7
    for name, (rc, out, err) in results.items():
        _, _, code, text = cases[name]
        last = err.strip().splitlines()[-1]
        assert rc == code, (name, rc, err)
        assert last.startswith("scepd: ") and text in last and last.endswith(f"(exit {int(code)})"), (name, err)
        assert "Traceback" not in out + err, (name, err)
        assert sum(line.startswith("scepd: ") for line in err.splitlines()) == 1, (name, err)


def test_debug_log_level_adds_the_traceback(state: Path) -> None:
    config = state / "wrong-pin-debug.toml"
    config.write_text((state / "scepd.toml").read_text().replace("file:secrets/token.pin", "file:secrets/wrong.pin"))
    (state / "secrets" / "wrong.pin").write_text("not-the-pin\n")
    done = subprocess.run(
        [sys.executable, "-m", "scepd", "--log-level", "debug", "serve", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == ExitCode.PIN_INCORRECT
    assert "Traceback" in done.stderr and "TokenStartError" in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(f"(exit {int(ExitCode.PIN_INCORRECT)})")


@pytest.fixture
def loaded(tmp_path: Path) -> Iterator[tuple[Daemon, list[str], list[int]]]:
    """A daemon (two token workers) enrolling continuously from a background thread."""
    init_state(tmp_path, CHALLENGE, workers=2)
    stop = threading.Event()
    failures: list[str] = []
    issued: list[int] = []
    with running(tmp_path, CHALLENGE) as d:

        async def load() -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                client = Client(d.url, http)
                await client.get_ca_cert()
                n = 0
                while not stop.is_set():
                    n += 1
                    try:
                        rep, _ = await client.enroll(f"load-{n}", CHALLENGE)
                    except (httpx.HTTPError, AssertionError) as e:
                        failures.append(repr(e))
                        continue
                    if rep.status is PkiStatus.SUCCESS:
                        issued.append(n)
                    else:
                        failures.append(str(rep.status))

        thread = threading.Thread(target=trio.run, args=(load,))
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not issued and time.monotonic() < deadline:
                time.sleep(0.05)
            yield d, failures, issued
        finally:
            stop.set()
            thread.join(60)
        assert "Traceback" not in d.log(), d.log()


def test_overlapping_restart_and_admin_commands_beside_a_loaded_daemon(
    loaded: tuple[Daemon, list[str], list[int]],
) -> None:
    """Each round starts a second `scepd serve` on the same token, store and state (as an overlapping
    restart does) together with two `scepd crl export`, while the first daemon enrolls: four processes
    (the second daemon has two token workers) log in at once beside the one serving."""
    d, failures, issued = loaded
    before = len(issued)
    for round_ in range(2):
        second = subprocess.Popen(
            [sys.executable, "-m", "scepd", "serve", "--config", str(d.config), "--listen", "127.0.0.1:0"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        exports = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "scepd",
                    "crl",
                    "export",
                    "-c",
                    str(d.config),
                    "--out",
                    str(d.state / f"export-{round_}-{i}.crl"),
                ],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(2)
        ]
        try:
            assert second.stdout is not None
            lines = []
            for line in second.stdout:
                lines.append(line)
                if "serving SCEP at" in line:
                    break
            assert any("serving SCEP at" in line for line in lines), "".join(lines)
            for export in exports:
                out = export.communicate(timeout=60)[0]
                assert export.returncode == 0, out
            second.send_signal(signal.SIGTERM)
            rest = second.communicate(timeout=30)[0]
            assert second.returncode == 0, "".join(lines) + rest
            assert "Traceback" not in "".join(lines) + rest
        finally:
            for p in (second, *exports):
                if p.poll() is None:
                    p.kill()
                    p.wait()
    assert not failures, failures
    assert len(issued) > before  # the first daemon kept issuing throughout
    assert scepd("crl", "show", "-c", str(d.config)).returncode == 0
