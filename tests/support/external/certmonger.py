"""Drive certmonger (Debian 12: 0.79.17), a SCEP client we did not write.

Two ways in:

* `CertmongerInstance`: a throw-away certmonger daemon that never touches the
  system bus, /var/lib/certmonger or the system lock.  It listens only on a
  private unix socket (`certmonger -n -L -P SOCK`), keeps every file under
  `workdir` via the CERTMONGER_*_DIR variables, and `getcert` reaches it through
  CERTMONGER_PVT_ADDRESS.  The daemon itself generates the key and the CSR
  (with the challenge password), builds the PKCSReq and runs `scep-submit`,
  exactly as in production.

* `scep_submit()` and friends: run the `scep-submit` helper directly for
  GetCACaps / GetCACert (and, given a ready pkiMessage, PKIOperation).

Quirks of certmonger 0.79.17 found against micromdm's reference server
(see README.md in this directory):

* scep-submit uses HTTP GET for every operation, PKIOperation included
  (base64, URL-encoded in ?message=), even when POSTPKIOperation is advertised.
* It only verifies a CertRep if it knows a CA certificate distinct from the
  RA/encryption certificate: from a CA+RA certs-only GetCACert reply
  (application/x-x509-ca-ra-cert), or from `add-scep-ca -N ca.pem`.  With a
  bare CA-only GetCACert reply and no -N, every reply fails with
  "failed to verify signature on server response ... certificate verify error".
* It decrypts the CertRep envelope with OpenSSL 3 defaults, so a server that
  answers with single DES (micromdm does) needs the legacy provider.  The
  daemon scrubs its environment at start-up, so OPENSSL_CONF does not work;
  `openssl_legacy=True` runs it in a private mount namespace instead.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CERTMONGER = shutil.which("certmonger") or "/usr/sbin/certmonger"
GETCERT = shutil.which("getcert") or "/usr/bin/getcert"
SCEP_SUBMIT = "/usr/lib/certmonger/scep-submit"

# States after which nothing more will happen without intervention (or, for
# CA_UNREACHABLE, not before certmonger's long retry timer). A rejection passes
# through NEED_TO_NOTIFY_REJECTION and NOTIFYING_REJECTION before it settles in
# CA_REJECTED: those two are not final, or a test reads the state mid-way.
FINAL_STATES = frozenset(
    {
        "MONITORING",
        "CA_REJECTED",
        "CA_UNREACHABLE",
        "CA_UNCONFIGURED",
        "NEED_GUIDANCE",
        "NEED_CA",
        "NEED_KEY_PAIR",  # stuck key generation
    }
)

# scep-submit exit codes (certmonger-scep-submit(8), submit-e.h).
SUBMIT_STATUS = {
    0: "ISSUED",
    1: "WAIT",
    2: "REJECTED",
    3: "UNREACHABLE",
    4: "UNCONFIGURED",
    5: "WAIT_WITH_DELAY",
    6: "OPERATION_NOT_SUPPORTED",
    16: "NEED_SCEP_MESSAGES",
    17: "NEED_NEW_KEY",
}

_LEGACY_OPENSSL_CNF = """\
# Written by tests/support/external/certmonger.py: default + legacy providers, so that
# OpenSSL 3 can open DES-CBC envelopes (micromdm's CertRep).
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
legacy = legacy_sect
[default_sect]
activate = 1
[legacy_sect]
activate = 1
"""


class CertmongerError(RuntimeError):
    pass


def legacy_namespace_available() -> bool:
    """True if `openssl_legacy=True` can work here (unshare -m permitted)."""
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _openssl_default_cnf() -> str:
    """OpenSSL's default config file (OPENSSLDIR/openssl.cnf, symlinks resolved)."""
    out = subprocess.run(["openssl", "version", "-d"], capture_output=True, text=True, timeout=10, check=True).stdout
    m = re.search(r'OPENSSLDIR: "([^"]+)"', out)
    path = Path(m.group(1) if m else "/usr/lib/ssl") / "openssl.cnf"
    return str(path.resolve())


@dataclass
class EnrollResult:
    request_id: str
    status: str
    ca_error: str | None
    stuck: bool
    key_path: Path
    cert_path: Path | None
    """The issued certificate (PEM) if status is MONITORING and the file exists."""
    listing: str
    """Raw `getcert list -i ID` output at the end of the wait."""
    elapsed: float = 0.0

    @property
    def issued(self) -> bool:
        return self.cert_path is not None


def _parse_list(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\t([a-zA-Z][\w -]*?): ?(.*)$", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2)
    return out


def _read_store_file(path: Path) -> dict[str, str]:
    """certmonger's key=value store files; continuation lines start with a space."""
    data: dict[str, str] = {}
    key = None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(" ") and key is not None:
            data[key] += "\n" + line[1:]
        elif "=" in line:
            key, value = line.split("=", 1)
            data[key] = value
    return data


@dataclass
class CertmongerInstance:
    """A private certmonger daemon rooted in `workdir`.

    Use as a context manager (or call start()/stop()); stop() always kills it.

        with CertmongerInstance(tmp_path / "cm") as cm:
            cm.add_scep_ca("t", url, signing_ca=ca_pem)
            res = cm.request("t", subject="CN=dev1", challenge="s3cret")
            assert res.status == "MONITORING"
    """

    workdir: Path
    debug_level: int = 2
    openssl_legacy: bool = False
    start_timeout: float = 20.0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).absolute()
        self._sock_tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- paths and environment ---------------------------------------------

    @property
    def config_dir(self) -> Path:
        return self.workdir / "config"

    @property
    def requests_dir(self) -> Path:
        return self.workdir / "requests"

    @property
    def cas_dir(self) -> Path:
        return self.workdir / "cas"

    @property
    def local_ca_dir(self) -> Path:
        return self.workdir / "local"

    @property
    def tmp_dir(self) -> Path:
        return self.workdir / "tmp"

    @property
    def files_dir(self) -> Path:
        """Where request() puts keys and certificates."""
        return self.workdir / "files"

    @property
    def log_path(self) -> Path:
        return self.workdir / "certmonger.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "certmonger.pid"

    @property
    def socket_path(self) -> Path:
        p = self.workdir / "certmonger.sock"
        if len(str(p)) > 100:  # sun_path is 108 bytes
            if self._sock_tmp is None:
                self._sock_tmp = tempfile.TemporaryDirectory(prefix="cm-")
            p = Path(self._sock_tmp.name) / "sock"
        return p

    @property
    def address(self) -> str:
        return f"unix:path={self.socket_path}"

    def env(self) -> dict[str, str]:
        """Environment for both the daemon and getcert."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CERTMONGER_", "DBUS_"))}
        env.update(
            {
                "CERTMONGER_CONFIG_DIR": str(self.config_dir),
                "CERTMONGER_REQUESTS_DIR": str(self.requests_dir),
                "CERTMONGER_CAS_DIR": str(self.cas_dir),
                "CERTMONGER_LOCAL_CA_DIR": str(self.local_ca_dir),
                "CERTMONGER_TMPDIR": str(self.tmp_dir),
                "CERTMONGER_SYSTEM_LOCK_FILE": str(self.workdir / "certmonger.lock"),
                "CERTMONGER_PVT_ADDRESS": self.address,
                # No bus at all: make sure nothing can find one.
                "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/certmonger-test-no-bus",
                "DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/certmonger-test-no-bus",
            }
        )
        return env

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> CertmongerInstance:
        if self.proc is not None:
            raise CertmongerError("already started")
        for d in (
            self.workdir,
            self.config_dir,
            self.requests_dir,
            self.cas_dir,
            self.local_ca_dir,
            self.tmp_dir,
            self.files_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            self.socket_path.unlink()
        argv = [
            CERTMONGER,
            "-n",
            "-L",
            "-P",
            str(self.socket_path),
            "-d",
            str(self.debug_level),
            "-p",
            str(self.pid_path),
        ]
        if self.openssl_legacy:
            argv = self._legacy_argv(argv)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.workdir,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise CertmongerError(f"certmonger exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.socket_path.exists():
                r = self.getcert("list-cas", check=False, timeout=10)
                if r.returncode == 0:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise CertmongerError(f"certmonger did not come up in {self.start_timeout}s:\n{self.log_tail()}")
            time.sleep(0.2)

    def _legacy_argv(self, argv: list[str]) -> list[str]:
        """Make OpenSSL's legacy provider (DES) available to the daemon.

        certmonger resets its environment at start-up (only HOME, PATH, SHELL,
        TERM, LANG, TMPDIR and its own variables survive), so OPENSSL_CONF
        cannot reach the children that decrypt the CertRep.  Instead run the
        daemon in a private mount namespace where OpenSSL's default config
        file is bind-mounted over by one that activates default+legacy.
        Nothing outside the namespace changes.  Needs CAP_SYS_ADMIN (root in
        CI); raises CertmongerError if unshare is not possible."""
        cnf = self.workdir / "openssl-legacy.cnf"
        cnf.write_text(_LEGACY_OPENSSL_CNF)
        system_cnf = _openssl_default_cnf()
        probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, timeout=10)
        if probe.returncode != 0:
            raise CertmongerError(
                "openssl_legacy needs a private mount namespace (unshare -m): " + probe.stderr.decode(errors="replace")
            )
        script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(cnf), system_cnf, *argv]

    def stop(self) -> None:
        """Kill the daemon (and any helper it is running: its own process group)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        if self._sock_tmp is not None:
            self._sock_tmp.cleanup()
            self._sock_tmp = None

    def __enter__(self) -> CertmongerInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- getcert -------------------------------------------------------------

    def getcert(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        if self.proc is None or self.proc.poll() is not None:
            raise CertmongerError("certmonger is not running")
        r = subprocess.run(
            [GETCERT, *args], capture_output=True, text=True, timeout=timeout, env=self.env(), stdin=subprocess.DEVNULL
        )
        if check and r.returncode != 0:
            raise CertmongerError(f"getcert {' '.join(args)} -> rc={r.returncode}\n{r.stdout}{r.stderr}")
        return r

    def add_scep_ca(
        self,
        name: str,
        url: str,
        *,
        signing_ca: Path | None = None,
        ra_cert: Path | None = None,
        other_certs: Path | None = None,
        tls_ca: Path | None = None,
        ca_identifier: str | None = None,
        non_renewal: bool = False,
        verbose_helper: bool = True,
        wait: float = 20.0,
    ) -> str:
        """`getcert add-scep-ca -c NAME -u URL ...`, then wait until certmonger
        has fetched the CA's certificates (GetCACaps + GetCACert).

        signing_ca (-N): pin the CA certificate that certmonger uses as trust
          anchor for CertRep signatures.  Needed when the server's GetCACert
          is CA-only (no separate RA); optional when it serves CA+RA.
        ra_cert (-r), other_certs (-I): pin instead of discovering.
        tls_ca (-R): for https URLs only.
        Returns the `getcert list-cas -c NAME` text.
        """
        args = ["add-scep-ca", "-c", name, "-u", url]
        if signing_ca is not None:
            args += ["-N", str(Path(signing_ca).absolute())]
        if ra_cert is not None:
            args += ["-r", str(Path(ra_cert).absolute())]
        if other_certs is not None:
            args += ["-I", str(Path(other_certs).absolute())]
        if tls_ca is not None:
            args += ["-R", str(Path(tls_ca).absolute())]
        if ca_identifier is not None:
            args += ["-i", ca_identifier]
        if non_renewal:
            args.append("-n")
        if verbose_helper:
            args.append("-v")  # helper's diagnostics end up in the daemon log
        self.getcert(*args)
        deadline = time.monotonic() + wait
        while True:
            text = self.getcert("list-cas", "-c", name).stdout
            if "certificate thumbprint" in text or "ca-error" in text:
                return text
            if time.monotonic() > deadline:
                return text
            time.sleep(0.3)

    def ca_store(self, name: str) -> dict[str, str]:
        """certmonger's saved view of CA `name` (ca_encryption_cert = RA or CA
        it encrypts to, ca_encryption_issuer_cert = CA above a separate RA,
        ca_capabilities, ...)."""
        for p in sorted(self.cas_dir.iterdir()):
            d = _read_store_file(p)
            if d.get("id") == name:
                return d
        raise KeyError(name)

    def request(
        self,
        ca: str,
        *,
        subject: str,
        challenge: str | None,
        nickname: str | None = None,
        key_size: int | None = None,
        key_type: str | None = None,
        dns: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> EnrollResult:
        """`getcert request -c CA -N SUBJECT -L CHALLENGE -k KEY -f CERT`, then
        wait (bounded) for a final state.  certmonger generates the key and CSR.

        subject: certmonger syntax, e.g. "CN=device-1,O=Example".
        """
        nickname = nickname or f"req-{int(time.time() * 1000) % 10**9}"
        key_path = self.files_dir / f"{nickname}.key.pem"
        cert_path = self.files_dir / f"{nickname}.cert.pem"
        args = ["request", "-c", ca, "-I", nickname, "-N", subject, "-k", str(key_path), "-f", str(cert_path)]
        if challenge is not None:
            args += ["-L", challenge]
        if key_size is not None:
            args += ["-g", str(key_size)]
        if key_type is not None:
            args += ["-G", key_type]
        for name in dns:
            args += ["-D", name]
        self.getcert(*args)
        return self.wait(nickname, key_path=key_path, cert_path=cert_path, timeout=timeout)

    def status(self, request_id: str) -> tuple[dict[str, str], str]:
        text = self.getcert("list", "-i", request_id).stdout
        return _parse_list(text), text

    def wait(
        self, request_id: str, *, key_path: Path, cert_path: Path, timeout: float = 60.0, poll: float = 0.5
    ) -> EnrollResult:
        """Poll `getcert list -i ID` until a final state or `timeout` seconds.

        On timeout the result carries the last state seen (e.g. CA_WORKING
        for a server that keeps answering PENDING)."""
        start = time.monotonic()
        while True:
            fields, text = self.status(request_id)
            state = fields.get("status", "UNKNOWN")
            stuck = fields.get("stuck", "no") == "yes"
            done = state in FINAL_STATES or stuck
            if state == "MONITORING" and not cert_path.exists():
                done = False  # being saved
            if done or time.monotonic() - start > timeout:
                issued = cert_path if (state == "MONITORING" and cert_path.exists()) else None
                return EnrollResult(
                    request_id=request_id,
                    status=state,
                    ca_error=fields.get("ca-error"),
                    stuck=stuck,
                    key_path=key_path,
                    cert_path=issued,
                    listing=text,
                    elapsed=time.monotonic() - start,
                )
            time.sleep(poll)


def enroll(
    workdir: Path,
    url: str,
    challenge: str | None,
    subject: str,
    *,
    signing_ca: Path | None = None,
    openssl_legacy: bool = False,
    timeout: float = 60.0,
    **request_kw: object,
) -> tuple[EnrollResult, str]:
    """One-shot: start a private certmonger, add the SCEP CA, request, stop.

    Returns (result, daemon log)."""
    cm = CertmongerInstance(workdir, openssl_legacy=openssl_legacy)
    with cm:
        cm.add_scep_ca("scep-under-test", url, signing_ca=signing_ca)
        res = cm.request("scep-under-test", subject=subject, challenge=challenge, timeout=timeout, **request_kw)  # type: ignore[arg-type]
    return res, cm.log_text()


# --- scep-submit, directly ---------------------------------------------------


@dataclass
class ScepSubmitResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def status(self) -> str:
        return SUBMIT_STATUS.get(self.returncode, f"EXIT_{self.returncode}")


def scep_submit(
    url: str,
    *args: str,
    operation: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 30.0,
) -> ScepSubmitResult:
    """Run `scep-submit -u URL ARGS...`.

    operation: sets CERTMONGER_OPERATION as the daemon would: IDENTIFY,
      FETCH-SCEP-CA-CAPS, FETCH-SCEP-CA-CERTS, GET-NEW-REQUEST-REQUIREMENTS,
      SUBMIT, POLL.  Without it, use the -c/-C/-p/-g flags.
    env: extra variables (CERTMONGER_SCEP_RA_CERTIFICATE, CERTMONGER_PKCSREQ, ...).
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CERTMONGER_")}
    if operation is not None:
        full_env["CERTMONGER_OPERATION"] = operation
    if env:
        full_env.update(env)
    r = subprocess.run([SCEP_SUBMIT, "-u", url, *args], input=stdin, capture_output=True, timeout=timeout, env=full_env)
    return ScepSubmitResult(r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))


def _split_pem(text: str) -> list[bytes]:
    return [
        m.group(0).encode() + b"\n"
        for m in re.finditer(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    ]


def get_ca_caps(url: str, *, ca_identifier: str | None = None, timeout: float = 30.0) -> list[str]:
    """GetCACaps through scep-submit -c; the capability lines (raises on failure)."""
    args = ["-c"] + (["-i", ca_identifier] if ca_identifier else [])
    r = scep_submit(url, *args, timeout=timeout)
    if r.returncode != 0:
        raise CertmongerError(f"scep-submit -c: {r.status}\n{r.stdout}{r.stderr}")
    return [line.strip() for line in r.stdout.splitlines() if line.strip()]


def get_ca_certs(url: str, *, ca_identifier: str | None = None, timeout: float = 30.0) -> list[bytes]:
    """GetCACert (and GetCAChain, and Dogtag-style GetCACert&message=1,2,...)
    through scep-submit -C.  PEM certificates in scep-submit's order: the RA
    (or the CA itself if there is no RA), then the CA, then any others."""
    args = ["-C"] + (["-i", ca_identifier] if ca_identifier else [])
    r = scep_submit(url, *args, timeout=timeout)
    if r.returncode != 0:
        raise CertmongerError(f"scep-submit -C: {r.status}\n{r.stdout}{r.stderr}")
    return _split_pem(r.stdout)


def submit_pkimessage(
    url: str,
    pkimessage_pem: str,
    *,
    ra_cert_pem: str,
    ca_cert_pem: str | None = None,
    poll: bool = False,
    timeout: float = 30.0,
) -> ScepSubmitResult:
    """Send a ready PKCSReq (or GetCertInitial with poll=True) pkiMessage (PEM
    'PKCS7') the way the daemon does (CERTMONGER_OPERATION=SUBMIT/POLL).
    On ISSUED stdout holds the reply's pkcsPKIEnvelope (PEM)."""
    env = {"CERTMONGER_SCEP_RA_CERTIFICATE": ra_cert_pem, "CERTMONGER_PKCSREQ": pkimessage_pem}
    if ca_cert_pem is not None:
        env["CERTMONGER_SCEP_CA_CERTIFICATE"] = ca_cert_pem
    return scep_submit(url, operation="POLL" if poll else "SUBMIT", env=env, timeout=timeout)
