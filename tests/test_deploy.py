"""The deployment files (systemd/, deploy/) are valid and agree with the code.

- systemd/scepd.service passes `systemd-analyze verify` and keeps its `systemd-analyze security`
  exposure score at or below what was measured;
- its timeouts fit what scepd/server.py and scepd/health.py really do;
- scepd enrolls a certificate under the unit's seccomp policy (system call filter,
  MemoryDenyWriteExecute, address families), rebuilt here with libseccomp the way systemd builds
  it, since a test machine has no systemd to start the unit with;
- systemd/scepd.toml.example parses, its credential: sources are the unit's LoadCredential= names,
  and its state lives in the unit's StateDirectory=;
- deploy/prometheus.yml and deploy/scepd-alerts.yml pass promtool, the alerts fire on the series
  scepd exposes (a `promtool test rules` suite), and they only name metrics and labels that
  scepd.metrics.REGISTRY has, so the rules cannot drift from the code unnoticed.

The tools come from Debian's systemd and prometheus packages; scripts/install.sh installs both.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from scepd import metrics
from scepd.config import Config, load, read_secret
from scepd.health import Readiness
from scepd.scep.constants import PkiStatus
from scepd.server import hypercorn_config, metrics_hypercorn_config
from tests.support.daemon import init_state
from tests.support.scep_client import Client

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "scepd.service"
EXAMPLE = REPO / "systemd" / "scepd.toml.example"
PROMETHEUS = REPO / "deploy" / "prometheus.yml"
ALERTS = REPO / "deploy" / "scepd-alerts.yml"
INSTALLED_SCEPD = "/opt/scepd/.venv/bin/scepd"  # the unit's documented install path
# systemd 252 (Debian 12) measured 1.2 "OK" for the unit; the remaining exposure is the host
# network (scepd serves it), no IP allow list (Intune's addresses are not fixed), the root
# directory and ProtectClock's read access to /dev/rtc. A change that loosens it fails here.
SECURITY_THRESHOLD = 1.5
CHALLENGE = "deploy-test-challenge-4Jw"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian package {package}); scripts/install.sh installs it")
    return path


def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    print(f"$ {' '.join(argv)}  -> exit {result.returncode}\n{result.stdout}{result.stderr}")
    return result


# --- the unit file -------------------------------------------------------------------------------


def unit_settings(text: str, section: str = "Service") -> dict[str, list[str]]:
    """Every assignment of `section`, in order (systemd allows a key several times)."""
    settings: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def timespan(text: str) -> float:
    """A systemd time span such as `30s`, `1min 30s` or `90` (seconds)."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text)
    assert parts and "".join(f"{n}{u}" for n, u in parts) == text.replace(" ", ""), f"unparsed time span {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


SERVICE = unit_settings(UNIT.read_text())


def credential_names() -> set[str]:
    return {value.split(":", 1)[0] for value in SERVICE.get("LoadCredential", [])}


@pytest.fixture
def local_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's scepd: verify wants the binary to exist."""
    text = UNIT.read_text()
    assert text.count(f"ExecStart={INSTALLED_SCEPD} ") == 1, "ExecStart is no longer the documented path"
    unit = tmp_path / "scepd.service"
    here = Path(sys.executable).with_name("scepd")
    unit.write_text(text.replace(f"ExecStart={INSTALLED_SCEPD} ", f"ExecStart={here} "))
    return unit


def test_unit_verifies(local_unit: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    # `verify` does not look up User=scepd, so a machine without that user passes too. It reports
    # problems of the unit file as lines naming the file, and some (unknown keys) with exit code 0:
    # both the exit code and the absence of such lines count.
    result = run(analyze, "verify", str(local_unit))
    about_unit = [line for line in (result.stdout + result.stderr).splitlines() if local_unit.name in line]
    assert result.returncode == 0 and not about_unit, about_unit


def test_verify_would_report_a_broken_unit(local_unit: Path) -> None:
    """The check above can fail: a misspelt setting is reported by file name."""
    analyze = tool("systemd-analyze", "systemd")
    local_unit.write_text(local_unit.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    result = run(analyze, "verify", str(local_unit))
    assert any(local_unit.name in line and "ProtectHomes" in line for line in result.stderr.splitlines())


def test_tpm_drop_in_verifies_and_lets_in_only_the_tpm(local_unit: Path) -> None:
    """systemd/scepd.service.d/tpm.conf (docs/systemd.md): loaded beside the unit, no unknown key, and it
    opens the devices to /dev/tpmrm0 alone. The check can fail: verify names the drop-in for a bad key."""
    analyze = tool("systemd-analyze", "systemd")
    drop_in = REPO / "systemd" / "scepd.service.d" / "tpm.conf"
    settings = unit_settings(drop_in.read_text())
    assert settings["DevicePolicy"] == ["closed"] and settings["DeviceAllow"] == ["/dev/tpmrm0 rw"]
    assert settings["SupplementaryGroups"] == ["tss"] and settings["PrivateDevices"] == ["no"]
    local = local_unit.with_name("scepd.service.d") / "tpm.conf"
    local.parent.mkdir()
    for text, clean in ((drop_in.read_text(), True), (drop_in.read_text().replace("DeviceAllow", "DeviceAlow"), False)):
        local.write_text(text)
        result = run(analyze, "verify", str(local_unit))
        about = [line for line in (result.stdout + result.stderr).splitlines() if "tpm.conf" in line]
        assert (result.returncode == 0 and not about) if clean else any("DeviceAlow" in line for line in about), about


def test_postgres_drop_in_verifies_and_passes_the_password_file_as_a_credential(local_unit: Path) -> None:
    """systemd/scepd.service.d/postgres.conf (docs/nodes.md): loaded beside the unit without complaint, it
    hands in the password file at the path its comment puts in the URL."""
    analyze = tool("systemd-analyze", "systemd")
    drop_in = REPO / "systemd" / "scepd.service.d" / "postgres.conf"
    text = drop_in.read_text()
    assert unit_settings(text)["LoadCredential"] == ["pgpass:/etc/scepd/pgpass"]
    unit = unit_settings(UNIT.read_text(), "Unit")  # the unit itself waits for the network the database is on
    assert unit["After"] == ["network-online.target"] and unit["Wants"] == ["network-online.target"]
    assert "passfile=/run/credentials/scepd.service/pgpass" in text
    local = local_unit.with_name("scepd.service.d") / "postgres.conf"
    local.parent.mkdir()
    for body, clean in ((text, True), (text.replace("LoadCredential", "LoadCredentials"), False)):
        local.write_text(body)
        result = run(analyze, "verify", str(local_unit))
        about = [line for line in (result.stdout + result.stderr).splitlines() if "postgres.conf" in line]
        assert (result.returncode == 0 and not about) if clean else any("LoadCredentials" in line for line in about), (
            about
        )


def test_unit_security_exposure(local_unit: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    result = run(analyze, "security", "--offline=true", "--no-pager", str(local_unit))
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\S+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    print(f"systemd-analyze security: exposure {score} {match.group(2)}")
    assert score <= SECURITY_THRESHOLD, f"exposure {score} is above {SECURITY_THRESHOLD}: a setting was loosened"


def test_unit_timeouts_fit_the_daemon() -> None:
    config = load(EXAMPLE)
    assert SERVICE["Type"] == ["notify"] and SERVICE["NotifyAccess"] == ["main"]
    assert SERVICE["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # SIGTERM only to the main process: it drains hypercorn and then closes its own token workers,
    # which die on SIGTERM (they only ignore SIGINT) and would fail the requests being drained.
    assert SERVICE["KillMode"] == ["mixed"]
    drain = max(hypercorn_config(config).graceful_timeout, metrics_hypercorn_config(config).graceful_timeout)
    worker_stop = 5  # _ProcessWorker.stop waits 5 s for a worker to leave after EOF
    assert timespan(SERVICE["TimeoutStopSec"][-1]) >= drain + worker_stop + 5

    # Each WATCHDOG=1 (every half WatchdogSec) first runs the token and store checks: their
    # timeouts must fit in the interval, or a slow check would be mistaken for a hung daemon.
    async def probe() -> None:
        return None

    checks = Readiness.build(token=probe, store=probe).checks
    assert timespan(SERVICE["WatchdogSec"][-1]) / 2 > max(c.timeout for c in checks)
    assert SERVICE["User"] == ["scepd"] and SERVICE["StateDirectory"] == ["scepd"]


# --- the unit's seccomp policy, rebuilt with libseccomp ---------------------------------------------


def syscall_groups() -> dict[str, list[str]]:
    """`systemd-analyze syscall-filter`: group name -> members (system calls and @groups)."""
    result = subprocess.run(
        [tool("systemd-analyze", "systemd"), "syscall-filter"], capture_output=True, text=True, timeout=60, check=True
    )
    out = result.stdout
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.split()[0], [])
        elif line.startswith((" ", "\t")) and not line.strip().startswith("#") and line.strip():
            current.append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        out |= expand(groups[name], groups) if name.startswith("@") else {name}
    return out


def unit_seccomp_policy() -> dict[str, Any]:
    """What the unit asks systemd to enforce with seccomp, as plain data for `confine_and_exec`."""
    groups = syscall_groups()
    allowed: set[str] | None = None
    for value in SERVICE["SystemCallFilter"]:
        if value.startswith("~"):
            assert allowed is not None, "the unit's filter is expected to be an allow list"
            allowed -= expand(value[1:].split(), groups)
        else:
            allowed = (allowed or set()) | expand(value.split(), groups)
    assert allowed is not None
    return {
        "allowed": sorted(allowed),
        "errno": getattr(errno, SERVICE["SystemCallErrorNumber"][-1]),
        "families": [getattr(socket, f) for f in SERVICE["RestrictAddressFamilies"][-1].split()],
        "mdwe": SERVICE["MemoryDenyWriteExecute"] == ["yes"],
    }


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


def confine_and_exec(policy_file: str, argv: list[str]) -> None:
    """Load the policy as systemd does (one seccomp filter per setting, all stacked), then exec.

    Allow list: default action errno (SystemCallErrorNumber=). MemoryDenyWriteExecute=: mmap with
    PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect with PROT_EXEC, shmat with SHM_EXEC get EPERM.
    RestrictAddressFamilies=: socket() with any other family gets EAFNOSUPPORT.
    """
    policy = json.loads(Path(policy_file).read_text())
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    allow, eq, masked_eq = 0x7FFF0000, 4, 7

    def fail(e: int) -> int:
        return 0x00050000 | e

    def load(default: int, rules: list[tuple[str, int, list[tuple[int, int, int, int]]]]) -> None:
        ctx = lib.seccomp_init(default)
        assert ctx, "seccomp_init failed"
        for name, action, conds in rules:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # not a system call of this architecture
                continue
            arr = (_ArgCmp * max(len(conds), 1))(*[_ArgCmp(*c) for c in conds])
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(conds), arr)
            assert rc == 0, f"seccomp_rule_add {name}: {rc}"
        assert lib.seccomp_load(ctx) == 0, "seccomp_load failed"

    load(
        allow,
        [
            ("socket", fail(errno.EAFNOSUPPORT), [(0, eq, family, 0)])
            for family in range(64)
            if family not in policy["families"]
        ],
    )
    if policy["mdwe"]:
        wx, shm_exec = 0x4 | 0x2, 0o100000
        load(
            allow,
            [
                ("mmap", fail(errno.EPERM), [(2, masked_eq, wx, wx)]),
                ("mprotect", fail(errno.EPERM), [(2, masked_eq, 0x4, 0x4)]),
                ("pkey_mprotect", fail(errno.EPERM), [(2, masked_eq, 0x4, 0x4)]),
                ("shmat", fail(errno.EPERM), [(2, masked_eq, shm_exec, shm_exec)]),
            ],
        )
    # Last, as systemd does: the allow list does not allow seccomp() itself.
    load(fail(policy["errno"]), [(name, allow, []) for name in policy["allowed"]])
    os.execv(argv[0], argv)


@pytest.fixture
def confined(tmp_path: Path) -> Iterator[list[str]]:
    """argv prefix that runs a command under the unit's seccomp policy."""
    policy = tmp_path / "seccomp.json"
    policy.write_text(json.dumps(unit_seccomp_policy()))
    yield [
        sys.executable,
        "-c",
        "import sys; from tests.test_deploy import confine_and_exec; confine_and_exec(sys.argv[1], sys.argv[2:])",
        str(policy),
    ]


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)", "PermissionError"),
        ("import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)", "Address family not supported"),
        ("import os; os.setuid(0)", "PermissionError"),  # @privileged is taken out of the allow list
    ],
)
def test_confinement_is_real(confined: list[str], code: str, error: str) -> None:
    """The rebuilt policy refuses what systemd would refuse (as root, too)."""
    result = subprocess.run(
        [*confined, sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and error in result.stderr, result.stderr


def children_status(pid: int) -> list[str]:
    """/proc/N/status of every child of `pid` (they may have been started from any of its threads)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:  # gone meanwhile
            continue
        if re.search(rf"^PPid:\s+{pid}$", text, re.M):
            found.append(text)
    return found


_SERVING = re.compile(r"serving SCEP at (http://\S+?)(/\S*) ")
_METRICS = re.compile(r"serving metrics at (http://\S+?)/metrics")


@pytest.mark.parametrize(
    ("workers", "processes"),
    [(2, 1), (0, 2), (1, 2)],
    ids=["token-workers", "serving-processes", "init-default-on-2-cores"],
)
async def test_scepd_enrolls_under_the_unit_seccomp_policy(
    tmp_path: Path, confined: list[str], workers: int, processes: int
) -> None:
    """Token worker processes (workers=2), or a serving process beside the primary (processes=2, which
    also re-executes itself for the metrics), with SoftHSM2, cryptography and hypercorn, all confined."""
    state = tmp_path / "state"
    await trio.to_thread.run_sync(lambda: init_state(state, CHALLENGE, workers=workers, processes=processes))
    argv = [*confined, sys.executable, "-m", "scepd", "serve", "--config", str(state / "scepd.toml")]
    proc = await trio.lowlevel.open_process(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1")
    )
    assert proc.stdout is not None
    output = ""
    try:
        with trio.fail_after(60):
            while not (_SERVING.search(output) and _METRICS.search(output)):
                chunk = await proc.stdout.receive_some()
                assert chunk, "scepd exited:\n" + output
                output += chunk.decode()
        scep_base = _SERVING.search(output)
        metrics_base = _METRICS.search(output)
        assert scep_base and metrics_base
        # The daemon and its children (token workers, serving processes) all run filtered
        # (Seccomp: 2 is "filter mode"); a serving process's own token worker is a grandchild.
        children = workers + processes - 1
        with trio.fail_after(30):
            while len(children_status(proc.pid)) < children:  # the serving process reports after the primary
                await trio.sleep(0.1)
        statuses = [Path(f"/proc/{proc.pid}/status").read_text()] + children_status(proc.pid)
        assert len(statuses) == 1 + children, statuses
        assert all(re.search(r"^Seccomp:\s+2$", s, re.M) for s in statuses), statuses
        async with httpx.AsyncClient(timeout=30) as http:
            client = Client(scep_base.group(1) + scep_base.group(2), http)
            await client.get_ca_cert()
            rep, _ = await client.enroll("confined-device", CHALLENGE)
            assert rep.status is PkiStatus.SUCCESS, (rep.fail_info, rep.fail_info_text)
            ready = await http.get(metrics_base.group(1) + "/readyz")
            assert ready.status_code == 200, ready.text
            exposition = (await http.get(metrics_base.group(1) + "/metrics")).text
        # The series the alert rules select are really there, with these label values.
        sign_ok = r'^scepd_key_operation_seconds_bucket\{[^}]*operation="sign"[^}]*result="ok"'
        assert re.search(sign_ok, exposition, re.M)
        assert re.search(r'^scepd_ready\{check="token"\} 1\.0$', exposition, re.M)
        assert re.search(r'^scepd_enrollments_total\{[^}]*outcome="SUCCESS"', exposition, re.M)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(30):
            while chunk := await proc.stdout.receive_some():
                output += chunk.decode()
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    print(output)
    assert proc.returncode == 0, output
    assert "Traceback" not in output and "Operation not permitted" not in output, output


# --- the example configuration -----------------------------------------------------------------------


def secret_sources(config: Config) -> list[str]:
    sources = [config.token.pin_source, config.static_challenge_source]
    if config.intune is not None:
        sources.append(config.intune.client_secret_source)
    return [s for s in sources if s]


def test_example_config_parses_with_the_unit_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load(EXAMPLE)  # parsing checks no file exists: paths, secrets are only read at start
    sources = secret_sources(config)
    assert all(s.startswith("credential:") for s in sources), sources
    used = {s.split(":", 1)[1] for s in sources}
    assert used == credential_names(), "the example's credential: names and the unit's LoadCredential= differ"
    # As systemd would: $CREDENTIALS_DIRECTORY holds one file per LoadCredential= name.
    for name in used:
        (tmp_path / name).write_text(f"value of {name}\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    for source in sources:
        assert read_secret(source) == f"value of {source.split(':', 1)[1]}"
    # Everything the daemon writes must be in the one writable place, the unit's StateDirectory=.
    state = Path("/var/lib") / SERVICE["StateDirectory"][-1]
    written = [
        config.store_path,
        config.ca.certificate,
        config.ca.ra_certificate,
        config.crl.file,
        Path(config.token.softhsm2_conf or ""),
    ]
    assert all(p is not None and p.is_relative_to(state) for p in written), written
    assert [e.challenge for e in config.endpoints] == ["static", "intune"]
    # The address Prometheus scrapes is the one the example serves metrics on.
    assert f'"{config.metrics.host}:{config.metrics.port}"' in PROMETHEUS.read_text()


# --- Prometheus ----------------------------------------------------------------------------------------


def test_promtool_checks_config_and_rules() -> None:
    promtool = tool("promtool", "prometheus")
    config = run(promtool, "check", "config", str(PROMETHEUS))  # also checks the rule file it names
    assert config.returncode == 0 and "SUCCESS" in config.stdout
    rules = run(promtool, "check", "rules", str(ALERTS))
    assert rules.returncode == 0 and f"SUCCESS: {len(alert_exprs())} rules found" in rules.stdout


def alert_exprs() -> dict[str, str]:
    """alert name -> PromQL, from the rules file (inline `expr:` or a `|` block). No YAML library here."""
    lines = ALERTS.read_text().splitlines()
    exprs: dict[str, str] = {}
    name = None
    for i, line in enumerate(lines):
        if m := re.match(r"\s*- alert: (\S+)$", line):
            name = m.group(1)
        elif (m := re.match(r"(\s*)expr: (.*)$", line)) and name:
            indent, value = len(m.group(1)), m.group(2).strip()
            if value in ("|", ">"):
                block = []
                for follow in lines[i + 1 :]:
                    if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                        break
                    block.append(follow.strip())
                value = " ".join(block).strip()
            exprs[name] = value
            name = None
    assert len(exprs) == ALERTS.read_text().count("- alert:"), "an alert without a readable expr"
    return exprs


def registry_metrics() -> dict[str, set[str]]:
    """Every sample name scepd exposes -> its label names (histogram le included)."""
    names_labels: dict[str, set[str]] = {}
    for family in metrics.REGISTRY.collect():
        # prometheus_client has no public accessor for a metric's label names, only these attributes.
        collector = metrics.REGISTRY._names_to_collectors[family.name]
        labels = set(collector._labelnames)  # type: ignore[attr-defined]
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}[family.type]
        for suffix in suffixes:
            names_labels[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names_labels


# Labels Prometheus adds to every scraped series (deploy/prometheus.yml: job, instance, service).
TARGET_LABELS = {"job", "instance", "service"}


def test_alert_rules_name_only_real_metrics_and_labels() -> None:
    known = registry_metrics()
    assert "scepd_key_operation_seconds_bucket" in known and "scepd_enrollments_total" in known
    for alert, expr in alert_exprs().items():
        used = set(re.findall(r"\b(scepd_[a-z0-9_]+)", expr))
        assert used or "up{" in expr, f"{alert} uses no scepd metric"
        unknown = used - set(known)
        assert not unknown, f"{alert}: {unknown} not in scepd.metrics.REGISTRY"
        allowed = set().union(*(known[n] for n in used)) | TARGET_LABELS
        for metric, matchers in re.findall(r"\b(scepd_[a-z0-9_]+)\{([^}]*)\}", expr):
            for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers):
                assert label in known[metric], f"{alert}: {metric} has no label {label!r}"
        for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (g.strip() for g in grouping.split(","))):
                assert label in allowed, f"{alert}: grouping by {label!r}, which none of {used} has"


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    all_labels = {"job": "scepd", "instance": labels.pop("instance", "a:9108"), **labels}
    text = ",".join(f'{k}="{v}"' for k, v in sorted(all_labels.items()))
    return {"series": f"{name}{{{text}}}", "values": values}


def firing(*alerts: tuple[str, dict[str, str]]) -> list[dict[str, Any]]:
    samples = []
    for name, labels in alerts:
        all_labels = {"alertname": name, "alertstate": "firing", "job": "scepd", **labels}
        text = ",".join(f'{k}="{v}"' for k, v in sorted(all_labels.items()))
        samples.append({"labels": f"ALERTS{{{text}}}", "value": 1})
    return samples


def key_histogram(instance: str, seconds: float, per_minute: int) -> list[dict[str, str]]:
    """Bucket series of scepd_key_operation_seconds with every observation taking `seconds`."""
    labels = {
        "instance": instance,
        "key": "scepd-ca",
        "operation": "sign",
        "mechanism": "SHA256_RSA_PKCS",
        "result": "ok",
    }
    out = []
    for bound in metrics.KEY_OPERATION_SECONDS._upper_bounds:  # type: ignore[attr-defined]
        le = "+Inf" if bound == float("inf") else repr(bound)
        out.append(
            series(
                "scepd_key_operation_seconds_bucket", f"0+{per_minute if seconds <= bound else 0}x60", le=le, **labels
            )
        )
    out.append(series("scepd_key_operation_seconds_count", f"0+{per_minute}x60", **labels))
    return out


def test_alerts_fire_as_intended(tmp_path: Path) -> None:
    """`promtool test rules` with series shaped like scepd's: which alerts fire, with which labels."""
    crit, warn = {"severity": "critical"}, {"severity": "warning"}
    day = 86400
    tests = [
        {  # the daemon, the CA certificate and the CRL
            "interval": "1m",
            "input_series": [
                series("up", "0x90", instance="down:9108"),
                series("up", "1x90"),
                series("scepd_ca_certificate_expiry_seconds", f"{60 * day}x90"),
                series("scepd_ca_certificate_expiry_seconds", f"{20 * day}x90", instance="b:9108"),
                series("scepd_ca_certificate_expiry_seconds", f"{3 * day}x90", instance="c:9108"),
                series("scepd_ra_certificate_expiry_seconds", f"{400 * day}x90"),
                series("scepd_ra_certificate_expiry_seconds", f"{20 * day}x90", instance="b:9108"),
                series("scepd_ra_certificate_expiry_seconds", f"{-1 * day}x90", instance="c:9108"),
                # a lone CA (no RA) exposes NaN: no alert
                series("scepd_ra_certificate_expiry_seconds", " ".join(["NaN"] * 91), instance="lone:9108"),
                series("scepd_crl_next_update_seconds", "43200x90"),
                series("scepd_crl_next_update_seconds", "3600x90", instance="b:9108"),
                series("scepd_crl_next_update_seconds", "-60x90", instance="c:9108"),
            ],
            "promql_expr_test": [
                {
                    "expr": 'ALERTS{alertstate="firing"}',
                    "eval_time": "80m",
                    "exp_samples": firing(
                        ("ScepdDown", {"instance": "down:9108", **crit}),
                        ("ScepdCACertificateExpiringSoon", {"instance": "b:9108", **warn}),
                        ("ScepdCACertificateExpiringSoon", {"instance": "c:9108", **warn}),
                        ("ScepdCACertificateExpiryCritical", {"instance": "c:9108", **crit}),
                        ("ScepdRACertificateExpiringSoon", {"instance": "b:9108", **warn}),
                        ("ScepdRACertificateExpiringSoon", {"instance": "c:9108", **warn}),
                        ("ScepdRACertificateExpiryCritical", {"instance": "c:9108", **crit}),
                        ("ScepdCRLNextUpdateSoon", {"instance": "b:9108", **warn}),
                        ("ScepdCRLNextUpdateSoon", {"instance": "c:9108", **warn}),
                        ("ScepdCRLExpired", {"instance": "c:9108", **crit}),
                    ),
                }
            ],
        },
        {  # token and store
            "interval": "1m",
            "input_series": [
                series("up", "1x30"),
                series("scepd_ready", "0x30", check="token"),
                series("scepd_ready", "1x30", check="store"),
                series("scepd_ready", "1x30", check="intune"),
                series("scepd_ready", "0x30", check="intune", instance="b:9108"),
                series(
                    "scepd_key_operation_seconds_count",
                    "0+6x30",
                    key="scepd-ca",
                    operation="sign",
                    mechanism="SHA256_RSA_PKCS",
                    result="error",
                ),
                # envelopes for another key are the clients' fault: no alert
                series(
                    "scepd_key_operation_seconds_count",
                    "0+1x30",
                    key="scepd-ca",
                    operation="unwrap",
                    mechanism="RSA_PKCS",
                    result="rejected",
                    instance="b:9108",
                ),
                series(
                    "scepd_key_operation_seconds_count",
                    "0+20x30",
                    key="scepd-ca",
                    operation="unwrap",
                    mechanism="RSA_PKCS",
                    result="ok",
                    instance="b:9108",
                ),
                # token errors on decrypt
                series(
                    "scepd_key_operation_seconds_count",
                    "0+5x30",
                    key="scepd-ca",
                    operation="unwrap",
                    mechanism="RSA_PKCS",
                    result="error",
                    instance="c:9108",
                ),
                *key_histogram("a:9108", 0.004, 60),
                *key_histogram("slow:9108", 0.8, 60),
            ],
            "promql_expr_test": [
                {
                    "expr": 'ALERTS{alertstate="firing"}',
                    "eval_time": "25m",
                    "exp_samples": firing(
                        ("ScepdTokenNotReady", {"instance": "a:9108", "check": "token", **crit}),
                        ("ScepdIntuneNotReady", {"instance": "b:9108", "check": "intune", **warn}),
                        ("ScepdTokenSignErrors", {"instance": "a:9108", "key": "scepd-ca", **crit}),
                        ("ScepdTokenDecryptErrors", {"instance": "c:9108", "key": "scepd-ca", **crit}),
                        ("ScepdSigningSlow", {"instance": "slow:9108", "key": "scepd-ca", **warn}),
                    ),
                }
            ],
        },
        {  # enrollments and Intune
            "interval": "1m",
            "input_series": [
                series("up", "1x60"),
                series(
                    "scepd_enrollments_total",
                    "0+2x60",
                    operation="PKCS_REQ",
                    profile="default",
                    challenge="static",
                    outcome="SUCCESS",
                ),
                series(
                    "scepd_enrollments_total",
                    "0+1x60",
                    operation="PKCS_REQ",
                    profile="default",
                    challenge="static",
                    outcome="BAD_REQUEST",
                ),
                series(
                    "scepd_enrollments_total",
                    "0+9x60",
                    operation="PKCS_REQ",
                    profile="default",
                    challenge="static",
                    outcome="BAD_REQUEST",
                    instance="b:9108",
                ),
                series(
                    "scepd_enrollments_total",
                    "0+1x60",
                    operation="PKCS_REQ",
                    profile="default",
                    challenge="static",
                    outcome="SUCCESS",
                    instance="b:9108",
                ),
                series("scepd_intune_calls_total", "0+10x60", action="validate", result="ok"),
                series("scepd_intune_calls_total", "0+1x60", action="validate", result="http_503"),
                series("scepd_intune_calls_total", "0+2x60", action="token", result="ok", instance="b:9108"),
                series("scepd_intune_calls_total", "0+2x60", action="token", result="transport", instance="b:9108"),
                series("scepd_intune_verdicts_total", "0+10x60", action="validate", code="Success"),
                series("scepd_intune_verdicts_total", "0+1x60", action="validate", code="ChallengeExpired"),
                series("scepd_intune_verdicts_total", "0+10x60", action="success_notification", code="Success"),
                series("scepd_intune_verdicts_total", "0+1x60", action="validate", code="Success", instance="b:9108"),
                series(
                    "scepd_intune_verdicts_total",
                    "0+5x60",
                    action="validate",
                    code="ChallengeExpired",
                    instance="b:9108",
                ),
                series(
                    "scepd_intune_verdicts_total",
                    "0+1x60",
                    action="success_notification",
                    code="error",
                    instance="b:9108",
                ),
            ],
            "promql_expr_test": [
                {
                    "expr": 'ALERTS{alertstate="firing"}',
                    "eval_time": "50m",
                    "exp_samples": firing(
                        ("ScepdEnrollmentFailuresHigh", {"instance": "b:9108", **warn}),
                        ("ScepdIntuneCallsFailing", {"instance": "b:9108", "action": "token", **warn}),
                        ("ScepdIntuneValidationRejections", {"instance": "b:9108", **warn}),
                        ("ScepdIntuneSuccessNotificationFailing", {"instance": "b:9108", **crit}),
                    ),
                }
            ],
        },
        {  # no scepd target at all (absent() keeps only the job label)
            "interval": "1m",
            "input_series": [{"series": 'up{job="other",instance="x:9100"}', "values": "1x30"}],
            "promql_expr_test": [
                {
                    "expr": 'ALERTS{alertstate="firing"}',
                    "eval_time": "15m",
                    "exp_samples": firing(("ScepdScrapeTargetMissing", warn)),
                }
            ],
        },
    ]
    suite = tmp_path / "scepd-alerts.test.yml"  # JSON is YAML
    suite.write_text(json.dumps({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests}, indent=1))
    result = run(tool("promtool", "prometheus"), "test", "rules", str(suite))
    assert result.returncode == 0, result.stdout + result.stderr
