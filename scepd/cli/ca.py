"""`scepd ca ...`: the CA key and certificate on the token, and its RA (create, renew, adopt)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from scepd.cli.common import Subparsers, WithConfig, load_config, parse_subject
from scepd.clock import utc_now

if TYPE_CHECKING:
    from cryptography import x509

    from scepd.config import Config

# trio, cryptography, the token and the config are imported by the commands that use them: building the parser
# (every `scepd` start, `--help` included) then costs little more than Python itself.

RA_DAYS = 730  # the RA certificate's life: renewed by `scepd ca ra-renew`, well inside the CA's 10 years


def _ra_subject(ca_subject: x509.Name) -> x509.Name:
    """The RA's default name: the CA's, with 'CA' in the CN turned into 'RA' (or ' RA' appended)."""
    from cryptography import x509

    attrs = []
    for a in ca_subject:
        if a.oid == x509.NameOID.COMMON_NAME and isinstance(a.value, str):
            cn = a.value[:-2] + "RA" if a.value.endswith(" CA") else a.value + " RA"
            a = x509.NameAttribute(a.oid, cn)
        attrs.append(a)
    return x509.Name(attrs)


def ensure_ra(config: Config, subject: x509.Name | None, size: int, days: int) -> x509.Certificate | None:
    """Create what is missing of the configured RA: key (with its rejection secret) and certificate.

    Resumable: a key already on the token gets a certificate if it has none,
    and the rejection secret is ensured in every case. None if nothing was issued.
    """
    import trio
    from cryptography import x509

    from scepd.ca.setup import init_ra, issue_ra_certificate
    from scepd.keys.pkcs11.pool import ensure_reject_secret, key_exists
    from scepd.wiring import key_label, token_config

    assert config.ca.ra_key is not None and config.ca.ra_certificate is not None
    token, ra_label = token_config(config), key_label(config.ca.ra_key)
    ca_cert = x509.load_pem_x509_certificate(config.ca.certificate.read_bytes())
    subject = subject or _ra_subject(ca_cert.subject)
    cert: x509.Certificate | None = None
    if not key_exists(token, ra_label):
        cert = trio.run(
            init_ra,
            token,
            key_label(config.ca.key),
            ca_cert,
            ra_label,
            config.ca.ra_certificate,
            subject,
            size,
            dt.timedelta(days=days),
            utc_now(),
        )
    elif not config.ca.ra_certificate.exists():
        cert = trio.run(
            issue_ra_certificate,
            token,
            key_label(config.ca.key),
            ca_cert,
            ra_label,
            config.ca.ra_certificate,
            subject,
            dt.timedelta(days=days),
            utc_now(),
        )
    if ensure_reject_secret(token, ra_label):
        print(f"scepd: created the implicit-rejection secret {ra_label}.reject on the token")
    return cert


def cmd_ca_init(args: argparse.Namespace) -> int:
    import trio

    from scepd.ca.setup import KeySpec, init_ca
    from scepd.cli.tpm import check_key_spec
    from scepd.keys.tpm import is_tpm_module
    from scepd.wiring import key_label, token_config

    config = load_config(args)
    if is_tpm_module(config.token.module):
        check_key_spec(args.key_type, args.key_size, args.curve)
    # Sign-only unless the config has no RA: then this CA is also the envelope key (lone-CA layout).
    lone = config.ca.ra_key is None
    spec = KeySpec(args.key_type, args.key_size, args.curve, decrypt=lone)
    cert = trio.run(
        init_ca,
        token_config(config),
        key_label(config.ca.key),
        config.ca.certificate,
        parse_subject(args.subject),
        spec,
        dt.timedelta(days=args.days),
        utc_now(),
    )
    print(f"CA {cert.subject.rfc4514_string()} created; certificate written to {config.ca.certificate}")
    if not lone:
        print(f"the CA key only signs: create the RA next with `scepd ca ra-init --config {config.path}`")
    return 0


def cmd_ca_csr(args: argparse.Namespace) -> int:
    import trio

    from scepd.ca.setup import KeySpec, ca_request
    from scepd.cli.tpm import check_key_spec
    from scepd.keys.tpm import is_tpm_module
    from scepd.wiring import key_label, token_config

    config = load_config(args)
    if args.generate and is_tpm_module(config.token.module):
        check_key_spec(args.key_type, args.key_size, args.curve)
    lone = config.ca.ra_key is None
    spec = KeySpec(args.key_type, args.key_size, args.curve, decrypt=lone) if args.generate else None
    pem = trio.run(ca_request, token_config(config), key_label(config.ca.key), parse_subject(args.subject), spec)
    Path(args.out).write_bytes(pem)
    print(f"CSR for the CA key written to {args.out}")
    return 0


def cmd_ca_import(args: argparse.Namespace) -> int:
    import trio

    from scepd.ca.setup import import_ca_certificate
    from scepd.wiring import key_label, token_config

    config = load_config(args)
    cert = trio.run(
        import_ca_certificate,
        token_config(config),
        key_label(config.ca.key),
        Path(args.certificate).read_bytes(),
        config.ca.certificate,
    )
    print(f"imported {cert.subject.rfc4514_string()} as {config.ca.certificate}")
    return 0


_CA_TABLE = re.compile(r"^[ \t]*\[[ \t]*ca[ \t]*\][ \t]*(#.*)?$", re.M)


def add_ra_to_config(path: Path, ra_key: str, ra_certificate: str) -> None:
    """Name the RA in the [ca] table of the TOML file, keeping the rest of the file as written.

    Only adds lines (right under the table header) and checks the result
    parses before it atomically replaces the file.
    """
    import tomllib

    from scepd.config import ConfigError
    from scepd.files import write_atomically

    text = path.read_text()
    header = _CA_TABLE.search(text)
    if header is None:
        raise ConfigError(
            "ca",
            f"{path} has no [ca] table header to add the RA to; add to [ca]:\n"
            f"ra_key = {json.dumps(ra_key)}\nra_certificate = {json.dumps(ra_certificate)}",
        )
    lines = (
        f"\n# Added by `scepd ca ra-init`: the RA opens envelopes and signs CertReps (docs/keys.md).\n"
        f"ra_key = {json.dumps(ra_key)}\nra_certificate = {json.dumps(ra_certificate)}"
    )
    new = text[: header.end()] + lines + text[header.end() :]
    try:
        ca = tomllib.loads(new)["ca"]
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("ca", f"adding the RA to {path} would not parse ({e}); add the lines by hand") from None
    if (ca.get("ra_key"), ca.get("ra_certificate")) != (ra_key, ra_certificate):
        raise ConfigError("ca", f"could not add the RA to {path}; add the lines by hand")
    write_atomically(path, new.encode(), path.stat().st_mode & 0o7777)


def cmd_ca_ra(args: argparse.Namespace) -> int:
    """Give the CA an RA; on a lone-CA state directory, also name it in the config (the one command)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    config = load_config(args)
    if not (config.ca.ra_key and config.ca.ra_certificate):
        from scepd.keys.pkcs11.pool import key_exists
        from scepd.wiring import key_label, token_config

        ca_object = key_label(config.ca.key)
        label = args.label or (ca_object[:-3] + "-ra" if ca_object.endswith("-ca") else ca_object + "-ra")
        cert_path = (
            (config.path.parent / args.certificate) if args.certificate else config.ca.certificate.parent / "ra.pem"
        )
        if key_exists(token_config(config), label) and not cert_path.exists():
            raise SystemExit(f"scepd: a key labelled {label!r} is already on the token; choose another with --label")
        if cert_path.exists() and not key_exists(token_config(config), label):
            raise SystemExit(f"scepd: {cert_path} exists; choose another file with --certificate")
        if cert_path.exists():  # both there: an earlier run that stopped before the config; adopt only its own
            from scepd.keys.pkcs11.pool import find_public_key

            found = x509.load_pem_x509_certificate(cert_path.read_bytes())
            try:
                found.verify_directly_issued_by(x509.load_pem_x509_certificate(config.ca.certificate.read_bytes()))
                ours = found.public_key() == find_public_key(token_config(config), label)
            except (ValueError, TypeError, InvalidSignature):
                ours = False
            if not ours:
                raise SystemExit(
                    f"scepd: {cert_path} is not a certificate from this CA for the key {label!r}; "
                    "choose others with --label and --certificate"
                )
        try:
            relative = str(cert_path.resolve().relative_to(config.path.parent.resolve()))
        except ValueError:
            relative = str(cert_path.resolve())
        uri = f"pkcs11:token={config.token.label};object={label};type=private"
        config = replace(config, ca=replace(config.ca, ra_key=uri, ra_certificate=cert_path))
        cert = ensure_ra(config, parse_subject(args.subject) if args.subject else None, args.key_size, args.days)
        add_ra_to_config(config.path, uri, relative)
        print(f"added to [ca] in {config.path}: ra_key = {uri}, ra_certificate = {relative}")
    else:
        cert = ensure_ra(config, parse_subject(args.subject) if args.subject else None, args.key_size, args.days)
    if cert is None:
        print(f"the RA {config.ca.ra_key} and its certificate {config.ca.ra_certificate} were already there")
    else:
        print(f"RA {cert.subject.rfc4514_string()} created; certificate written to {config.ca.ra_certificate}")
        print("restart scepd to serve it (GetCACert then answers CA + RA)")
    if args.restrict_ca_key:
        _restrict_ca_key(config)
    return 0


def _restrict_ca_key(config: Config) -> None:
    """Clear CKA_DECRYPT/CKA_UNWRAP on the CA key: only once the RA opens the envelopes everywhere."""
    import pkcs11 as p11

    from scepd.keys.pkcs11.pool import restrict_to_signing
    from scepd.wiring import key_label, token_config

    label = key_label(config.ca.key)
    try:
        changed = restrict_to_signing(token_config(config), label)
    except p11.exceptions.PKCS11Error as e:
        raise SystemExit(f"scepd: the token would not make {label!r} sign-only: {type(e).__name__}: {e}") from None
    print(
        f"the CA key {label!r} can no longer decrypt on the token (CKA_DECRYPT, CKA_UNWRAP false)"
        if changed
        else f"the CA key {label!r} was already sign-only"
    )


def cmd_ca_ra_renew(args: argparse.Namespace) -> int:
    """A new CA-signed certificate for the same RA key, before the old one ends (for a timer)."""
    import trio
    from cryptography import x509

    from scepd.ca.setup import renew_ra
    from scepd.wiring import key_label, token_config

    config = load_config(args)
    if not (config.ca.ra_key and config.ca.ra_certificate):
        raise SystemExit("scepd: the configuration names no RA (ca.ra_key); create one with `scepd ca ra-init`")
    old = x509.load_pem_x509_certificate(config.ca.ra_certificate.read_bytes())
    now = utc_now()
    left = old.not_valid_after_utc - now
    if args.if_expiring_within is not None and left > dt.timedelta(days=args.if_expiring_within):
        print(
            f"RA certificate {config.ca.ra_certificate} is valid until {old.not_valid_after_utc:%Y-%m-%d} "
            f"({left.days} days): not renewed"
        )
        return 0
    ca_cert = x509.load_pem_x509_certificate(config.ca.certificate.read_bytes())
    new = trio.run(
        renew_ra,
        token_config(config),
        key_label(config.ca.key),
        ca_cert,
        key_label(config.ca.ra_key),
        config.ca.ra_certificate,
        dt.timedelta(days=args.days),
        now,
    )
    print(
        f"RA certificate renewed: serial {new.serial_number:x}, valid until {new.not_valid_after_utc:%Y-%m-%d}, "
        f"written to {config.ca.ra_certificate}; restart scepd to serve it"
    )
    if new.not_valid_after_utc == ca_cert.not_valid_after_utc:
        print(
            f"scepd: warning: the RA certificate ends with the CA certificate ({ca_cert.not_valid_after_utc:%Y-%m-%d});"
            " the CA needs renewing (ca.next_certificate)",
            file=sys.stderr,
        )
    return 0


def add_commands(sub: Subparsers, with_config: WithConfig) -> None:
    ca = sub.add_parser("ca", help="CA key and certificate on the token").add_subparsers(dest="sub", required=True)

    def key_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--key-type", choices=["rsa", "ec"], default="rsa")
        sp.add_argument("--key-size", type=int, choices=[2048, 3072, 4096], default=3072)
        sp.add_argument("--curve", choices=["P-256", "P-384"], default="P-256")
        sp.add_argument("--subject", required=True, help="RFC 4514 subject, e.g. 'CN=Example SCEP CA,O=Example'")

    sp = with_config(ca.add_parser("init", help="generate the CA key on the token and a self-signed certificate"))
    key_opts(sp)
    sp.add_argument("--days", type=int, default=3650)
    sp.set_defaults(func=cmd_ca_init)
    sp = with_config(ca.add_parser("csr", help="write a CSR for the CA key, for an enterprise root to sign"))
    key_opts(sp)
    sp.add_argument("--generate", action="store_true", help="generate the key on the token first")
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_ca_csr)
    sp = with_config(ca.add_parser("import", help="install the CA certificate signed by an enterprise root"))
    sp.add_argument("certificate", help="PEM certificate for the CA key")
    sp.set_defaults(func=cmd_ca_import)
    sp = with_config(
        ca.add_parser(
            "ra-init",
            help="give the CA an RA: RSA key on the token, CA-signed certificate, rejection secret; "
            "adds ca.ra_key/ca.ra_certificate to the config when absent",
        )
    )
    sp.add_argument("--subject", help="RA subject (default: the CA's, with CA turned into RA in the CN)")
    sp.add_argument("--key-size", type=int, choices=[2048, 3072, 4096], default=2048)
    sp.add_argument("--days", type=int, default=RA_DAYS)
    sp.add_argument(
        "--label",
        help="token object label when the config names no RA (default: the CA's "
        "label with -ca turned into -ra, e.g. scepd-ra)",
    )
    sp.add_argument(
        "--certificate",
        help="RA certificate file when the config names no RA (default: ra.pem beside the CA certificate)",
    )
    sp.add_argument(
        "--restrict-ca-key",
        action="store_true",
        help="also clear CKA_DECRYPT/CKA_UNWRAP on the CA key; only once every scepd using this token "
        "was restarted with the RA, since a lone-CA daemon can then no longer open envelopes",
    )
    sp.set_defaults(func=cmd_ca_ra)
    sp = with_config(ca.add_parser("ra-renew", help="issue a new certificate for the same RA key (for a timer)"))
    sp.add_argument("--days", type=int, default=RA_DAYS, help=f"validity (default {RA_DAYS}; never past the CA's end)")
    sp.add_argument(
        "--if-expiring-within", type=int, metavar="DAYS", help="do nothing unless the RA certificate ends within DAYS"
    )
    sp.set_defaults(func=cmd_ca_ra_renew)
