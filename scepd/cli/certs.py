"""`scepd cert ...` and `scepd crl ...`: look at, export and revoke issued certificates; CRLs.

These run beside the daemon on the same store (SQLite in WAL mode lets a
second writer in). A revocation made here reaches the daemon's CRL within
`crl.check_interval_seconds`: the daemon notices that the revoked set changed.
Serials are hexadecimal, as in the logs and the store.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scepd.cli.common import Subparsers, WithConfig, load_config, time_text
from scepd.clock import utc_now
from scepd.logs import audit
from scepd.store.base import MAX_SERIAL, CertificateRecord, CertStatus

if TYPE_CHECKING:
    from cryptography import x509

# trio, cryptography and the CRL code are imported by the commands that use them, so that building the parser
# (every `scepd` start) stays cheap.

_SEPARATORS = re.compile(r"[\s:]")


def parse_serial(text: str) -> int:
    """Hex, optionally with a 0x prefix or colon separators (as openssl prints them)."""
    cleaned = _SEPARATORS.sub("", text).lower().removeprefix("0x")
    try:
        serial = int(cleaned, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hexadecimal serial") from None
    if not 0 < serial <= MAX_SERIAL:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid serial (1 to 20 octets)")
    return serial


def _reason(text: str) -> str:
    from scepd.ca.crl import parse_reason

    try:
        return parse_reason(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _record(args: argparse.Namespace) -> CertificateRecord:
    import trio

    from scepd.store.backends import open_store

    config = load_config(args)

    async def get() -> CertificateRecord | None:
        async with open_store(config.store_location) as store:
            return await store.get(args.serial)

    record = trio.run(get)
    if record is None:
        raise SystemExit(f"scepd: no certificate with serial {args.serial:x}")
    return record


def cmd_cert_list(args: argparse.Namespace) -> int:
    import trio

    from scepd.store.backends import open_store

    config = load_config(args)
    status = CertStatus(args.status) if args.status else None

    async def listing() -> list[CertificateRecord]:
        async with open_store(config.store_location) as store:
            return await store.list_certificates(status, args.limit, getattr(args, "text", None))

    print(f"{'SERIAL':<40} {'STATUS':<10} {'NOT AFTER':<20} SUBJECT")
    for r in trio.run(listing):
        print(f"{r.serial:<40x} {r.status.value:<10} {time_text(r.not_after):<20} {r.subject}")
    return 0


def cmd_cert_show(args: argparse.Namespace) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    r = _record(args)
    fields = [
        ("serial", f"{r.serial:x}"),
        ("subject", r.subject),
        ("status", r.status.value),
        ("revoked at", time_text(r.revoked_at) if r.revoked_at else None),
        ("reason", r.revocation_reason),
        ("not before", time_text(r.not_before)),
        ("not after", time_text(r.not_after)),
        ("issued at", time_text(r.issued_at)),
        ("profile", r.profile),
        ("transaction id", r.transaction_id),
        ("requester", r.requester),
        ("renewal of", f"{r.renewal_of:x}" if r.renewal_of is not None else None),
    ]
    for name, value in fields:
        if value is not None:
            print(f"{name + ':':<16}{value}")
    cert = x509.load_der_x509_certificate(r.der)
    print(cert.public_bytes(serialization.Encoding.PEM).decode(), end="")
    return 0


def cmd_cert_export(args: argparse.Namespace) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    r = _record(args)
    data = r.der if args.der else x509.load_der_x509_certificate(r.der).public_bytes(serialization.Encoding.PEM)
    if args.out:
        Path(args.out).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def cmd_cert_revoke(args: argparse.Namespace) -> int:
    import trio

    from scepd.store.backends import open_store

    config = load_config(args)

    async def revoke() -> tuple[CertificateRecord | None, bool]:
        async with open_store(config.store_location) as store:
            record = await store.get(args.serial)
            if record is None:
                return None, False
            return record, await store.revoke(args.serial, args.reason, utc_now())

    record, revoked = trio.run(revoke)
    if record is None:
        print(f"scepd: no certificate with serial {args.serial:x}", file=sys.stderr)
        return 1
    if not revoked:
        print(f"scepd: {args.serial:x} is already revoked", file=sys.stderr)
        return 1
    audit("revoked", serial=f"{args.serial:x}", reason=args.reason, source="cli", subject=record.subject)
    print(
        f"revoked {args.serial:x} ({record.subject}) reason={args.reason}; a running daemon republishes "
        f"its CRL within {config.crl.check_interval_seconds:g} s"
    )
    return 0


def _describe_crl(der: bytes, ca_certificate: x509.Certificate) -> None:
    from cryptography import x509

    crl = x509.load_der_x509_crl(der)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    valid = crl.is_signature_valid(ca_certificate.public_key())  # type: ignore[arg-type]
    next_update = crl.next_update_utc
    print(f"{'issuer:':<16}{crl.issuer.rfc4514_string()}")
    print(f"{'crl number:':<16}{number}")
    print(f"{'this update:':<16}{time_text(crl.last_update_utc)}")
    expired = " (EXPIRED)" if next_update is not None and next_update < utc_now() else ""
    print(f"{'next update:':<16}{time_text(next_update)}{expired}")
    print(f"{'signature:':<16}{'valid' if valid else 'INVALID'} (CA {ca_certificate.subject.rfc4514_string()})")
    print(f"{'revoked:':<16}{len(crl)}")
    for entry in crl:
        try:
            reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
        except x509.ExtensionNotFound:
            reason = "-"
        print(f"  {entry.serial_number:x} {time_text(entry.revocation_date_utc)} {reason}")


def _read_crl_file(path: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data).public_bytes(serialization.Encoding.DER)
    return data


def cmd_crl_show(args: argparse.Namespace) -> int:
    from cryptography import x509

    config = load_config(args)
    path = Path(args.input) if args.input else config.crl.file
    if path is None:
        raise SystemExit(
            "scepd: crl.file is not set, so there is no published copy to show; "
            "pass --in FILE, or sign a fresh CRL with `scepd crl export`"
        )
    try:
        der = _read_crl_file(path)
    except FileNotFoundError:
        raise SystemExit(f"scepd: {path} does not exist (has the daemon run since crl.file was set?)") from None
    print(f"{'file:':<16}{path}")
    _describe_crl(der, x509.load_pem_x509_certificate(config.ca.certificate.read_bytes()))
    return 0


def cmd_crl_export(args: argparse.Namespace) -> int:
    """Sign a fresh CRL on the token from the store (it takes the next CRL number)."""
    import trio

    from scepd.ca.publisher import CrlPublisher
    from scepd.keys.pkcs11.pool import TokenPool
    from scepd.store.backends import open_store
    from scepd.wiring import load_ca, token_config

    config = load_config(args)

    async def export() -> tuple[bytes, int]:
        async with TokenPool.open(token_config(config)) as pool, open_store(config.store_location) as store:
            crl = await CrlPublisher(load_ca(config, pool), store, lifetime=config.crl.lifetime).get()
            return (crl.pem if args.pem or args.out.endswith(".pem") else crl.der), crl.number

    data, number = trio.run(export)
    Path(args.out).write_bytes(data)
    print(f"CRL number {number} written to {args.out}")
    return 0


def add_commands(sub: Subparsers, with_config: WithConfig) -> None:
    cert = sub.add_parser("cert", help="issued certificates: list, search, show, export, revoke")
    cs = cert.add_subparsers(dest="sub", required=True)
    sp = with_config(cs.add_parser("list", help="issued certificates, newest first"))
    sp.add_argument("--status", choices=[s.value for s in CertStatus])
    sp.add_argument("--limit", type=int, default=100)
    sp.set_defaults(func=cmd_cert_list)
    sp = with_config(
        cs.add_parser(
            "search",
            help="certificates whose subject or requester contains TEXT, whose"
            " transaction ID is TEXT, or whose serial starts with TEXT",
        )
    )
    sp.add_argument("text")
    sp.add_argument("--status", choices=[s.value for s in CertStatus])
    sp.add_argument("--limit", type=int, default=100)
    sp.set_defaults(func=cmd_cert_list)
    sp = with_config(cs.add_parser("show", help="one certificate's record and PEM"))
    sp.add_argument("serial", type=parse_serial, help="hexadecimal serial")
    sp.set_defaults(func=cmd_cert_show)
    sp = with_config(cs.add_parser("export", help="write one certificate (PEM unless --der)"))
    sp.add_argument("serial", type=parse_serial, help="hexadecimal serial")
    sp.add_argument("--der", action="store_true")
    sp.add_argument("--out", help="file to write (default: standard output)")
    sp.set_defaults(func=cmd_cert_export)
    sp = with_config(cs.add_parser("revoke", help="revoke a certificate; the daemon's CRL follows"))
    sp.add_argument("serial", type=parse_serial, help="hexadecimal serial")
    sp.add_argument(
        "--reason",
        required=True,
        type=_reason,
        help="RFC 5280 reason, e.g. keyCompromise or superseded (an unknown one lists them all)",
    )
    sp.set_defaults(func=cmd_cert_revoke)

    crl = sub.add_parser("crl", help="certificate revocation lists")
    rs = crl.add_subparsers(dest="sub", required=True)
    sp = with_config(rs.add_parser("show", help="describe the CRL the daemon last published (crl.file)"))
    sp.add_argument("--in", dest="input", help="describe this CRL file (DER or PEM) instead")
    sp.set_defaults(func=cmd_crl_show)
    sp = with_config(rs.add_parser("export", help="sign a fresh CRL on the token and write it"))
    sp.add_argument("--out", required=True)
    sp.add_argument("--pem", action="store_true", help="PEM (also chosen by a .pem file name); DER otherwise")
    sp.set_defaults(func=cmd_crl_export)
