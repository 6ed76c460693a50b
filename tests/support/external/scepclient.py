"""Drive micromdm's `scepclient` (Debian package `scep`, Go), a SCEP client we did not write.

scepclient makes (or reuses) an RSA key, builds the CSR with the challenge,
does GetCACaps + GetCACert + PKIOperation (POST if advertised) and writes the
issued certificate.  It also writes csr.pem and self.pem into its working
directory, so each enrollment gets its own directory.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCEPCLIENT = shutil.which("scepclient") or "/usr/bin/scepclient"


@dataclass
class ScepclientResult:
    returncode: int
    output: str
    key_path: Path
    cert_path: Path | None
    """The issued certificate (PEM), if scepclient exited 0 and wrote it."""

    @property
    def issued(self) -> bool:
        return self.cert_path is not None


def ca_fingerprint(ca_der: bytes) -> str:
    """The -ca-fingerprint value: SHA-256 of the CA certificate DER, hex."""
    return hashlib.sha256(ca_der).hexdigest()


def enroll(
    workdir: Path,
    url: str,
    challenge: str | None,
    *,
    cn: str = "scepclient",
    organization: str | None = None,
    ou: str | None = None,
    country: str | None = None,
    key_size: int = 2048,
    ca_fingerprint: str | None = None,
    cacert_message: str | None = None,
    key_path: Path | None = None,
    timeout: float = 60.0,
    debug: bool = True,
) -> ScepclientResult:
    """`scepclient -server-url URL -challenge C -private-key K -certificate CERT -cn CN ...`.

    Runs in `workdir` (created).  An existing key_path is reused (renewal-style
    tests); otherwise scepclient generates one.  Never raises on a SCEP failure:
    check .issued / .returncode / .output (e.g. "failInfo: badRequest").
    """
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    key_path = Path(key_path) if key_path is not None else workdir / "key.pem"
    cert_path = workdir / "cert.pem"
    args = [
        SCEPCLIENT,
        "-server-url",
        url,
        "-private-key",
        str(key_path),
        "-certificate",
        str(cert_path),
        "-cn",
        cn,
        "-keySize",
        str(key_size),
    ]
    if challenge is not None:
        args += ["-challenge", challenge]
    if organization is not None:
        args += ["-organization", organization]
    if ou is not None:
        args += ["-ou", ou]
    if country is not None:
        args += ["-country", country]
    if ca_fingerprint is not None:
        args += ["-ca-fingerprint", ca_fingerprint]
    if cacert_message is not None:
        args += ["-cacert-message", cacert_message]
    if debug:
        args.append("-debug")
    try:
        proc = subprocess.run(args, cwd=workdir, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        rc, out = proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        rc = -1
        out = ((e.stdout or b"") + (e.stderr or b"")).decode(errors="replace") + f"\nTIMEOUT after {timeout}s"
    issued = cert_path if rc == 0 and cert_path.exists() and cert_path.stat().st_size > 0 else None
    return ScepclientResult(rc, out, key_path, issued)
