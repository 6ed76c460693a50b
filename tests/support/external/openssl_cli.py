"""Thin wrappers over the `openssl` command (OpenSSL 3.x CLI), an implementation
of CMS/X.509 we did not write, for cross-checking what a SCEP server emits and
for building inputs it must accept.

Every call is bounded by a timeout and works on temporary files; inputs may be
given as bytes (PEM or DER as documented) or as paths.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl") or "openssl"
TIMEOUT = 60

Data = bytes | str | Path


class OpensslError(RuntimeError):
    def __init__(self, args: Sequence[str], proc: subprocess.CompletedProcess[bytes]):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        super().__init__(f"openssl {' '.join(args)} -> rc={proc.returncode}\n{proc.stderr.decode(errors='replace')}")


def run(
    args: Sequence[str], input: bytes | None = None, check: bool = True, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[bytes]:
    """Run `openssl ARGS...`; raise OpensslError on failure if check."""
    env = dict(os.environ)
    if input is None:
        input = b""  # never let openssl wait for a pass phrase on our stdin
    proc = subprocess.run([OPENSSL, *args], input=input, capture_output=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise OpensslError(args, proc)
    return proc


class _Files:
    """Temporary directory that turns bytes/str inputs into files."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="openssl-cli-")
        self.dir = Path(self._tmp.name)
        self._n = 0

    def path(self, data: Data, suffix: str = ".pem") -> str:
        if isinstance(data, Path):
            return str(data)
        self._n += 1
        p = self.dir / f"in{self._n}{suffix}"
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(p)

    def out(self, name: str) -> Path:
        return self.dir / name

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()


def _legacy_args(legacy: bool) -> list[str]:
    # micromdm's reference server encrypts replies with single DES, which
    # OpenSSL 3 only has in the legacy provider.
    return ["-provider", "legacy", "-provider", "default"] if legacy else []


# --- certificates ---------------------------------------------------------


def verify(cert_pem: Data, ca_pem: Data, untrusted: Data | None = None, purpose: str | None = None) -> bool:
    """`openssl verify -CAfile ca [-untrusted ...] [-purpose ...] cert` -> True iff 'OK'."""
    with _Files() as f:
        args = ["verify", "-CAfile", f.path(ca_pem)]
        if untrusted is not None:
            args += ["-untrusted", f.path(untrusted)]
        if purpose is not None:
            args += ["-purpose", purpose]
        args.append(f.path(cert_pem))
        proc = run(args, check=False)
        return proc.returncode == 0 and proc.stdout.strip().endswith(b": OK")


def x509_text(cert: Data, inform: str = "PEM") -> str:
    with _Files() as f:
        return run(["x509", "-inform", inform, "-noout", "-text", "-in", f.path(cert)]).stdout.decode()


def x509_field(cert: Data, field: str, inform: str = "PEM") -> str:
    """One `openssl x509 -noout -FIELD` value, e.g. field='subject' -> 'CN = foo'."""
    with _Files() as f:
        out = (
            run(["x509", "-inform", inform, "-noout", f"-{field}", "-nameopt", "oneline", "-in", f.path(cert)])
            .stdout.decode()
            .strip()
        )
    return out.split("=", 1)[1].strip() if out.lower().startswith(field.lower() + "=") else out


def x509_to_der(cert_pem: Data) -> bytes:
    with _Files() as f:
        return run(["x509", "-outform", "DER", "-in", f.path(cert_pem)]).stdout


def x509_to_pem(cert_der: Data) -> bytes:
    with _Files() as f:
        return run(["x509", "-inform", "DER", "-outform", "PEM", "-in", f.path(cert_der, ".der")]).stdout


def pkcs7_certs(data: Data, inform: str = "DER") -> list[bytes]:
    """PEM certificates inside a PKCS#7/CMS SignedData (a certs-only GetCACert reply, say)."""
    with _Files() as f:
        out = run(["pkcs7", "-inform", inform, "-print_certs", "-in", f.path(data, ".p7")]).stdout.decode()
    certs, cur = [], []
    for line in out.splitlines():
        if line.startswith("-----BEGIN CERTIFICATE-----"):
            cur = [line]
        elif cur:
            cur.append(line)
            if line.startswith("-----END CERTIFICATE-----"):
                certs.append(("\n".join(cur) + "\n").encode())
                cur = []
    return certs


# --- CMS -------------------------------------------------------------------


@dataclass
class CmsVerified:
    content: bytes
    signers_pem: bytes


def cms_verify_der(
    data: Data,
    ca_pem: Data | None = None,
    *,
    noverify: bool = False,
    purpose: str = "any",
    certfile: Data | None = None,
) -> CmsVerified:
    """Verify a DER CMS/PKCS#7 SignedData and return its content and signer cert(s).

    With ca_pem the signer certificate must chain to it (purpose 'any' by
    default: SCEP signers are often CA or RA certs without emailProtection).
    noverify=True checks the signature only, not the signer's chain.
    Raises OpensslError on failure.
    """
    with _Files() as f:
        out, signer = f.out("content.bin"), f.out("signer.pem")
        args = [
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            f.path(data, ".der"),
            "-out",
            str(out),
            "-signer",
            str(signer),
        ]
        if noverify or ca_pem is None:
            args.append("-noverify")
        else:
            args += ["-CAfile", f.path(ca_pem), "-purpose", purpose]
        if certfile is not None:
            args += ["-certfile", f.path(certfile)]
        run(args)
        return CmsVerified(out.read_bytes(), signer.read_bytes() if signer.exists() else b"")


def cms_print(data: Data, inform: str = "DER") -> str:
    """`openssl cms -cmsout -print` of any CMS structure, for assertions on OIDs."""
    with _Files() as f:
        return run(
            ["cms", "-cmsout", "-print", "-noout", "-inform", inform, "-in", f.path(data, ".der")]
        ).stdout.decode()


def cms_decrypt(
    data: Data,
    key_pem: Data,
    cert_pem: Data | None = None,
    *,
    inform: str = "DER",
    legacy: bool = False,
    key_password: str | None = None,
) -> bytes:
    """Decrypt a CMS/PKCS#7 EnvelopedData with a recipient key (PEM).

    legacy=True loads OpenSSL's legacy provider (needed for DES envelopes).
    key_password: for an encrypted PEM key ("" for micromdm's depot ca.key).
    """
    with _Files() as f:
        out = f.out("plain.bin")
        args = [
            "cms",
            "-decrypt",
            "-binary",
            "-inform",
            inform,
            "-in",
            f.path(data, ".der"),
            "-inkey",
            f.path(key_pem),
            "-out",
            str(out),
            *_legacy_args(legacy),
        ]
        if cert_pem is not None:
            args += ["-recip", f.path(cert_pem)]
        if key_password is not None:
            args += ["-passin", f"pass:{key_password}"]
        run(args)
        return out.read_bytes()


def cms_encrypt(
    data: bytes,
    recipient_pem: Data | Sequence[Data],
    *,
    cipher: str = "aes256",
    keyopts: Sequence[str] = (),
    legacy: bool = False,
) -> bytes:
    """Build a DER EnvelopedData for one or more recipient certificates.

    `openssl cms -encrypt -binary -outform DER -<cipher> -recip CERT...`.
    cipher: aes128, aes256, des3, des (des needs legacy=True), ...
    keyopts: e.g. ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"] for RSA-OAEP
    key transport (applied to the last recipient; openssl's rule).
    """
    recips = [recipient_pem] if isinstance(recipient_pem, (bytes, str, Path)) else list(recipient_pem)
    with _Files() as f:
        out = f.out("env.der")
        args = [
            "cms",
            "-encrypt",
            "-binary",
            "-outform",
            "DER",
            "-in",
            f.path(data, ".bin"),
            "-out",
            str(out),
            f"-{cipher}",
            *_legacy_args(legacy),
        ]
        for r in recips:
            args += ["-recip", f.path(r)]
        for opt in keyopts:
            args += ["-keyopt", opt]
        run(args)
        return out.read_bytes()


def cms_sign(
    data: bytes, signer_cert: Data, signer_key: Data, *, md: str = "sha256", nocerts: bool = False, noattr: bool = False
) -> bytes:
    """A plain DER SignedData over `data` (no SCEP attributes: openssl cannot add them)."""
    with _Files() as f:
        out = f.out("signed.der")
        args = [
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-outform",
            "DER",
            "-md",
            md,
            "-in",
            f.path(data, ".bin"),
            "-out",
            str(out),
            "-signer",
            f.path(signer_cert),
            "-inkey",
            f.path(signer_key),
        ]
        if nocerts:
            args.append("-nocerts")
        if noattr:
            args.append("-noattr")
        run(args)
        return out.read_bytes()


# --- keys and CSRs -----------------------------------------------------------


@dataclass
class NewRequest:
    key_path: Path
    csr_path: Path

    @property
    def csr_pem(self) -> bytes:
        return self.csr_path.read_bytes()

    @property
    def csr_der(self) -> bytes:
        return run(["req", "-in", str(self.csr_path), "-outform", "DER"]).stdout


def req_new(
    workdir: Path,
    subject: str,
    *,
    challenge: str | None = None,
    key: str = "rsa:2048",
    md: str = "sha256",
    sans: Sequence[str] = (),
    name: str = "req",
) -> NewRequest:
    """`openssl req -new -newkey KEY -nodes -subj SUBJECT` with a challengePassword attribute.

    subject: OpenSSL form, e.g. "/CN=device-1/O=Example".
    key: the -newkey argument: "rsa:2048", or "ec:PARAMS.pem" for EC keys.
    sans: subjectAltName entries, e.g. ["DNS:host.example", "IP:10.0.0.1"].
    Files land in workdir as NAME.key / NAME.csr / NAME.cnf.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cnf = workdir / f"{name}.cnf"
    # -subj would make openssl skip the attributes section: the DN goes in the config.
    rdns = [part for part in re.split(r"(?<!\\)/", subject) if part]
    if not rdns:
        raise ValueError("empty subject")
    lines = [
        "[req]",
        "distinguished_name = dn",
        "attributes = req_attributes",
        "prompt = no",
        "utf8 = yes",
        "string_mask = utf8only",
        "[dn]",
    ]
    for i, rdn in enumerate(rdns):
        attr, _, value = rdn.partition("=")
        lines.append(f"{i}.{attr.strip()} = {value.replace(chr(92) + '/', '/')}")
    lines.append("[req_attributes]")
    if challenge is not None:
        if "\n" in challenge:
            raise ValueError("challenge must be one line")
        lines.append(f"challengePassword = {challenge}")
    cnf.write_text("\n".join(lines) + "\n")
    key_path, csr_path = workdir / f"{name}.key", workdir / f"{name}.csr"
    args = [
        "req",
        "-new",
        "-config",
        str(cnf),
        "-newkey",
        key,
        "-nodes",
        "-keyout",
        str(key_path),
        "-out",
        str(csr_path),
        f"-{md}",
    ]
    if sans:
        args += ["-addext", "subjectAltName=" + ",".join(sans)]
    run(args)
    return NewRequest(key_path, csr_path)


def req_text(csr: Data) -> str:
    with _Files() as f:
        return run(["req", "-noout", "-text", "-in", f.path(csr)]).stdout.decode()


def req_verify(csr: Data) -> bool:
    with _Files() as f:
        return run(["req", "-noout", "-verify", "-in", f.path(csr)], check=False).returncode == 0
