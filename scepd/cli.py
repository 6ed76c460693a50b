"""The `scepd` command line: set up a CA on the token, run the daemon, admin tasks."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import os
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import trio
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from scepd import cli_certs, cli_errors, cli_pending, logs
from scepd.config import Config, ConfigError, load, read_secret
from scepd.files import write_atomically

DEFAULT_CONFIG = os.environ.get("SCEPD_CONFIG", "/etc/scepd/scepd.toml")
REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("scepd")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _subject(text: str) -> x509.Name:
    try:
        return x509.Name.from_rfc4514_string(text)
    except ValueError as e:
        raise SystemExit(f"invalid subject {text!r}: {e}") from None


def _config(args: argparse.Namespace) -> Config:
    # ConfigError (and OSError for an unreadable file) end in main(), with their own exit codes.
    return load(Path(args.config))


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _config(args)
    print(f"{config.path}: ok ({len(config.endpoints)} endpoint(s), {len(config.profiles)} profile(s))")
    warnings, skipped = _key_warnings(config)
    for warning in warnings:
        print(f"scepd: warning: {warning}")
    if skipped:
        print(f"scepd: note: the token was not opened, so the key layout was checked from the file only ({skipped})")
    return 0


def _key_warnings(config: Config) -> tuple[list[str], str | None]:
    """The start-up key-layout warnings, and why the token-side ones could not be checked, if so.

    The token may well be out of reach here (a `credential:` PIN outside the
    systemd unit); the file is still valid, so that is a note, not a failure.
    """
    from scepd.config import key_layout_warnings
    from scepd.keys.pkcs11 import TokenPool
    from scepd.server import key_warnings, load_ca, token_config

    async def check() -> list[str]:
        async with TokenPool.open(replace(token_config(config), workers=0)) as pool:
            try:
                ca = load_ca(config, pool)
            except ValueError as e:  # keys and certificates that do not fit: the daemon would not start
                return [f"event=ca_not_usable reason={str(e)!r}"]
            return await key_warnings(config, ca)

    try:
        return trio.run(check), None
    except Exception as e:  # noqa: BLE001 - the file is valid; what the token says is extra
        return key_layout_warnings(config), f"{type(e).__name__}: {e}"


def cmd_serve(args: argparse.Namespace) -> int:
    from scepd import serving
    from scepd.server import serve

    config = _config(args)
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        config = replace(config, listen_host=host, listen_port=int(port))
    if args.serving_fd is not None:
        return _serve_beside_primary(config, args.serving_fd, args.control_fd)
    if config.processes > 1 and serving.METRICS_DIR_ENV not in os.environ:
        serving.reexec_for_metrics(args.argv)  # does not return

    async def main() -> None:
        def on_metrics(binds: list[str]) -> None:
            for bind in binds:
                print(f"scepd: serving metrics at {bind}/metrics (health: {bind}/readyz)", flush=True)

        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, config, signals=True, on_metrics=on_metrics))
            for bind in binds:
                for ep in config.endpoints:
                    print(f"scepd: serving SCEP at {bind}{ep.path} (challenge: {ep.challenge})", flush=True)
            if config.static_challenge_source and args.show_challenge:
                secret = read_secret(config.static_challenge_source)
                print(f"scepd: static challenge password: {secret}", flush=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    finally:
        serving.remove_metrics_directory()
    return 0


def _serve_beside_primary(config: Config, serving_fd: int, control_fd: int | None) -> int:
    from scepd.server import serve

    try:
        trio.run(partial(serve, config, signals=True, serving_fd=serving_fd, control_fd=control_fd))
    except KeyboardInterrupt:
        pass
    return 0


DEFAULT_TOML = """\
# scepd embedded default: SoftHSM2 token, SQLite store, static challenge.
# Every setting is described in README.md ("Configuration").
[server]
listen = "{listen}"
processes = {processes}

[metrics]
listen = "{metrics_listen}"

[token]
module = "{module}"
label = "scepd"
pin = "file:secrets/token.pin"
softhsm2_conf = "softhsm/softhsm2.conf"
workers = {workers}

[ca]
key = "pkcs11:token=scepd;object=scepd-ca;type=private"
certificate = "ca.pem"
{ra}
[store]
path = "scepd.sqlite3"

[crl]
file = "ca.crl"

[challenge]
static = "file:secrets/challenge"

[endpoints.default]
path = "/scep"
challenge = "static"
profile = "default"

[profiles.default]
validity_days = 365
"""


# The RA lines of DEFAULT_TOML; `scepd init --no-ra` leaves them out (the lone-CA layout).
RA_TOML = """\
# The RA key opens envelopes and signs CertReps; the CA key only signs (docs/keys.md).
ra_key = "pkcs11:token=scepd;object=scepd-ra;type=private"
ra_certificate = "ra.pem"
"""
RA_DAYS = 730  # the RA certificate's life: renewed by `scepd ca ra-renew`, well inside the CA's 10 years


def _ra_subject(ca_subject: x509.Name) -> x509.Name:
    """The RA's default name: the CA's, with 'CA' in the CN turned into 'RA' (or ' RA' appended)."""
    attrs = []
    for a in ca_subject:
        if a.oid == x509.NameOID.COMMON_NAME and isinstance(a.value, str):
            cn = a.value[:-2] + "RA" if a.value.endswith(" CA") else a.value + " RA"
            a = x509.NameAttribute(a.oid, cn)
        attrs.append(a)
    return x509.Name(attrs)


def _ensure_ra(config: Config, subject: x509.Name | None, size: int, days: int) -> x509.Certificate | None:
    """Create what is missing of the configured RA: key (with its rejection secret) and certificate.

    Resumable: a key already on the token gets a certificate if it has none,
    and the rejection secret is ensured in every case. None if nothing was issued.
    """
    from scepd.ca.setup import init_ra, issue_ra_certificate
    from scepd.keys.pkcs11 import ensure_reject_secret, key_exists
    from scepd.server import key_label, token_config

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
            _now(),
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
            _now(),
        )
    if ensure_reject_secret(token, ra_label):
        print(f"scepd: created the implicit-rejection secret {ra_label}.reject on the token")
    return cert


@dataclass(frozen=True)
class ServingLayout:
    processes: int  # server.processes
    token_workers: int  # token.workers, in each serving process


def serving_layout(cores: int) -> ServingLayout:
    """The serving layout `scepd init` writes: the one that measured fastest with the RA in place.

    One serving process per core, because one process runs at most about one core of Python (its
    GIL), and each with one token worker process of its own, so that the token calls do not wait
    for that GIL either. Measured against the other layouts in docs/benchmarks.md (issue 15).
    """
    return ServingLayout(processes=max(1, min(cores, 64)), token_workers=1)


def cmd_init(args: argparse.Namespace) -> int:
    """Create the embedded default in a state directory; idempotent.

    The default is a sign-only CA key and an RA key that opens envelopes
    (docs/keys.md). The layout follows the config: one written by an earlier
    version (or `--no-ra`) has no RA, and then the CA key opens envelopes.
    """
    state = Path(args.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    subprocess.run(["bash", str(REPO / "softhsm" / "init-token.sh"), str(state)], check=True, stdout=subprocess.DEVNULL)
    secret_file = state / "secrets" / "challenge"
    if not secret_file.exists():
        secret_file.write_text((args.challenge or secrets.token_urlsafe(18)) + "\n")
        secret_file.chmod(0o600)
    config_file = state / "scepd.toml"
    if not config_file.exists():
        layout = serving_layout(os.cpu_count() or 1)
        # A free SCEP port (tests, several instances) gets a free metrics port too.
        metrics_listen = args.metrics_listen or ("127.0.0.1:0" if args.listen.endswith(":0") else "127.0.0.1:9108")
        config_file.write_text(
            DEFAULT_TOML.format(
                listen=args.listen,
                metrics_listen=metrics_listen,
                module=args.module,
                workers=layout.token_workers if args.workers is None else args.workers,
                processes=layout.processes if args.processes is None else args.processes,
                ra="" if args.no_ra else RA_TOML,
            )
        )
    config = load(config_file)
    from scepd.ca.setup import KeySpec, init_ca
    from scepd.keys.pkcs11 import ensure_reject_secret
    from scepd.server import key_label, token_config

    lone = config.ca.ra_key is None
    if not config.ca.certificate.exists():
        trio.run(
            init_ca,
            token_config(config),
            key_label(config.ca.key),
            config.ca.certificate,
            _subject(args.subject),
            KeySpec("rsa", args.key_size, decrypt=lone),
            dt.timedelta(days=3650),
            _now(),
        )
        usage = "signs and opens envelopes (no RA)" if lone else "sign only"
        print(f"scepd: created CA {args.subject} on the token ({usage}); certificate {config.ca.certificate}")
    if lone:
        ensure_reject_secret(token_config(config), key_label(config.ca.key))
        print(
            "scepd: warning: this state has no RA, so the CA key opens envelopes; add one with "
            f"`scepd ca ra-init --config {config_file}` (docs/keys.md)"
        )
    else:
        ra = _ensure_ra(config, _subject(args.ra_subject) if args.ra_subject else None, 2048, RA_DAYS)
        if ra is not None:
            print(
                f"scepd: created RA {ra.subject.rfc4514_string()} on the token; certificate "
                f"{config.ca.ra_certificate} (until {ra.not_valid_after_utc:%Y-%m-%d})"
            )
    print(f"scepd: state ready in {state}; config {config_file}")
    return 0


def cmd_ca_init(args: argparse.Namespace) -> int:
    from scepd.ca.setup import KeySpec, init_ca
    from scepd.server import key_label, token_config

    config = _config(args)
    # Sign-only unless the config has no RA: then this CA is also the envelope key (lone-CA layout).
    lone = config.ca.ra_key is None
    spec = KeySpec(args.key_type, args.key_size, args.curve, decrypt=lone)
    cert = trio.run(
        init_ca,
        token_config(config),
        key_label(config.ca.key),
        config.ca.certificate,
        _subject(args.subject),
        spec,
        dt.timedelta(days=args.days),
        _now(),
    )
    print(f"CA {cert.subject.rfc4514_string()} created; certificate written to {config.ca.certificate}")
    if not lone:
        print(f"the CA key only signs: create the RA next with `scepd ca ra-init --config {config.path}`")
    return 0


def cmd_ca_csr(args: argparse.Namespace) -> int:
    from scepd.ca.setup import KeySpec, ca_request
    from scepd.server import key_label, token_config

    config = _config(args)
    lone = config.ca.ra_key is None
    spec = KeySpec(args.key_type, args.key_size, args.curve, decrypt=lone) if args.generate else None
    pem = trio.run(ca_request, token_config(config), key_label(config.ca.key), _subject(args.subject), spec)
    Path(args.out).write_bytes(pem)
    print(f"CSR for the CA key written to {args.out}")
    return 0


def cmd_ca_import(args: argparse.Namespace) -> int:
    from scepd.ca.setup import import_ca_certificate
    from scepd.server import key_label, token_config

    config = _config(args)
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
    config = _config(args)
    if not (config.ca.ra_key and config.ca.ra_certificate):
        from scepd.keys.pkcs11 import key_exists
        from scepd.server import key_label, token_config

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
            from scepd.keys.pkcs11 import find_public_key

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
        cert = _ensure_ra(config, _subject(args.subject) if args.subject else None, args.key_size, args.days)
        add_ra_to_config(config.path, uri, relative)
        print(f"added to [ca] in {config.path}: ra_key = {uri}, ra_certificate = {relative}")
    else:
        cert = _ensure_ra(config, _subject(args.subject) if args.subject else None, args.key_size, args.days)
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

    from scepd.keys.pkcs11 import restrict_to_signing
    from scepd.server import key_label, token_config

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
    from scepd.ca.setup import renew_ra
    from scepd.server import key_label, token_config

    config = _config(args)
    if not (config.ca.ra_key and config.ca.ra_certificate):
        raise SystemExit("scepd: the configuration names no RA (ca.ra_key); create one with `scepd ca ra-init`")
    old = x509.load_pem_x509_certificate(config.ca.ra_certificate.read_bytes())
    now = _now()
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


def cmd_challenge_mint(args: argparse.Namespace) -> int:
    from scepd.challenge.onetime import mint_challenge
    from scepd.store.sqlite import SqliteStore

    config = _config(args)
    ttl = dt.timedelta(minutes=args.ttl_minutes) if args.ttl_minutes else config.onetime_ttl

    async def mint() -> str:
        async with SqliteStore.open(config.store_path) as store:
            return await mint_challenge(store, _now(), ttl, args.note)

    print(trio.run(mint))
    return 0


def _intune_errors(command):  # type: ignore[no-untyped-def]
    """Every `scepd intune ...` command ends an error with one line naming the cause, never a
    traceback (unless --log-level debug, which logs it): the operator reads it in a terminal."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from scepd.intune.errors import IntuneError

        try:
            return int(command(args))
        except (SystemExit, KeyboardInterrupt, ConfigError):
            raise
        except BaseException as e:  # noqa: BLE001 - reported in one line below
            cause = _first_error(e)
            logging.getLogger("scepd.cli").debug("intune command failed", exc_info=True)
            detail = str(cause).splitlines()[0] if str(cause) else ""
            if isinstance(cause, IntuneError):
                text = f"Intune: {detail}" + (f" (client-request-id {cause.request_id})" if cause.request_id else "")
            else:
                text = f"{type(cause).__name__}: {detail}".rstrip(": ")
            print(f"scepd: intune {args.sub}: {text}", file=sys.stderr)
            return 1

    return run


def _first_error(e: BaseException) -> BaseException:
    """The exception itself, or the first leaf of a trio exception group."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


def _with_intune(args: argparse.Namespace, work):  # type: ignore[no-untyped-def]
    """Run `work(client, store, ca_subject, intune_config)` with the daemon's Intune client, token and store."""
    from scepd.keys.pkcs11 import TokenPool
    from scepd.server import intune_client, intune_http, load_ca, token_config
    from scepd.store.sqlite import SqliteStore

    config = _config(args)
    if config.intune is None:
        raise SystemExit("scepd: the configuration has no [intune] table")
    settings = config.intune

    async def main():  # type: ignore[no-untyped-def]
        async with (
            TokenPool.open(token_config(config)) as pool,
            SqliteStore.open(config.store_path) as store,
            intune_http(settings) as http,
        ):
            ca = load_ca(config, pool)
            issuer = ca.certificate.subject.rfc4514_string()
            return await work(intune_client(settings, pool, http), store, issuer, settings)

    return trio.run(main)


@_intune_errors
def cmd_intune_check(args: argparse.Namespace) -> int:
    async def check(client, store, issuer, settings):  # type: ignore[no-untyped-def]
        findings = await client.diagnose()
        for f in findings:
            print(f"{'ok    ' if f.ok else 'FAILED'} {f.what}: {f.detail}")
        required = [f for f in findings if not f.ok and "PkiConnectorFEService" not in f.what]
        if required or not any(f.what.startswith("Intune scep_challenge_provider") for f in findings):
            print("scepd: intune check: Intune is not usable (see the FAILED lines)", file=sys.stderr)
            return 1
        return 0

    return int(_with_intune(args, check))


@_intune_errors
def cmd_intune_credential(args: argparse.Namespace) -> int:
    from scepd.intune.credential import create_app_credential
    from scepd.server import token_config

    config = _config(args)
    cert = trio.run(
        create_app_credential,
        token_config(config),
        args.label,
        _subject(args.subject),
        Path(args.out),
        dt.timedelta(days=args.days),
        _now(),
    )
    print(
        f"key {args.label!r} generated on the token; certificate {cert.subject.rfc4514_string()} written to "
        f"{args.out}\nupload it to the Entra app registration, then set in [intune]:\n"
        f'client_certificate = "{Path(args.out).resolve()}"\n'
        f'client_key = "pkcs11:token={config.token.label};object={args.label};type=private"'
    )
    return 0


@_intune_errors
def cmd_intune_notifications(args: argparse.Namespace) -> int:
    from scepd.store.sqlite import SqliteStore

    config = _config(args)

    async def listing() -> None:
        async with SqliteStore.open(config.store_path) as store:
            for n in await store.notifications(args.transaction, args.limit):
                serial = f"{n.serial:x}" if n.serial is not None else "-"
                state = "delivered" if n.delivered else "NOT-DELIVERED"
                print(
                    f"{n.at.isoformat()} {n.kind.value:<7} {state:<13} serial={serial} "
                    f"transaction_id={n.transaction_id} detail={n.detail}"
                )

    trio.run(listing)
    return 0


@_intune_errors
def cmd_intune_sync(args: argparse.Namespace) -> int:
    from scepd.intune.revocation import RevocationSync

    async def sync(client, store, issuer, settings):  # type: ignore[no-untyped-def]
        report = await RevocationSync(
            client, store, issuer_name=settings.revocation_issuer_name or issuer, batch=settings.revocation_batch
        ).sync_once()
        print(f"downloaded={report.downloaded} revoked={report.revoked} uploaded={report.uploaded}")
        return 0

    return int(_with_intune(args, sync))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scepd", description="SCEP CA daemon with keys on a PKCS#11 token.")
    p.add_argument("--log-level", default=os.environ.get("SCEPD_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"TOML configuration (default {DEFAULT_CONFIG})")
        return sp

    sp = sub.add_parser("init", help="create the embedded default (SoftHSM2 token, CA, config) in a state directory")
    sp.add_argument("--state", default="var", help="state directory (default ./var)")
    sp.add_argument("--listen", default="127.0.0.1:8080")
    sp.add_argument(
        "--metrics-listen",
        help="HOST:PORT of the metrics listener (default 127.0.0.1:9108; 127.0.0.1:0 when --listen has port 0)",
    )
    sp.add_argument("--challenge", help="static challenge to use (default: a random one)")
    sp.add_argument("--subject", default="CN=scepd development CA,O=scepd")
    sp.add_argument(
        "--key-size", type=int, choices=[2048, 3072, 4096], default=3072, help="CA RSA key size (default 3072)"
    )
    sp.add_argument("--ra-subject", help="RA subject (default: the CA's, with CA turned into RA in the CN)")
    sp.add_argument(
        "--no-ra",
        action="store_true",
        help="the lone-CA layout of earlier versions: the CA key also opens envelopes (start-up warns)",
    )
    sp.add_argument("--module", default="/usr/lib/softhsm/libsofthsm2.so")
    # The defaults come from serving_layout(): what measured fastest here (docs/benchmarks.md).
    sp.add_argument(
        "--workers",
        type=int,
        help="token worker processes per serving process (0: one in-process thread; default 1)",
    )
    sp.add_argument(
        "--processes",
        type=int,
        help="serving processes on the one port (server.processes; default one per core)",
    )
    sp.set_defaults(func=cmd_init)

    sp = with_config(sub.add_parser("serve", help="run the daemon"))
    sp.add_argument("--listen", help="HOST:PORT, overriding server.listen")
    sp.add_argument("--show-challenge", action="store_true", help="print the static challenge (development only)")
    # Internal: how the primary starts the serving processes beside it (server.processes).
    sp.add_argument("--serving-fd", type=int, help=argparse.SUPPRESS)
    sp.add_argument("--control-fd", type=int, help=argparse.SUPPRESS)
    sp.set_defaults(func=cmd_serve)

    cfg = sub.add_parser("config", help="configuration tools").add_subparsers(dest="sub", required=True)
    with_config(cfg.add_parser("check", help="validate the configuration file")).set_defaults(func=cmd_config_check)

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

    ch = sub.add_parser("challenge", help="one-time challenges").add_subparsers(dest="sub", required=True)
    sp = with_config(ch.add_parser("mint", help="print a new single-use challenge (stored only hashed)"))
    sp.add_argument("--ttl-minutes", type=int)
    sp.add_argument("--note", default="")
    sp.set_defaults(func=cmd_challenge_mint)

    it = sub.add_parser("intune", help="Microsoft Intune integration").add_subparsers(dest="sub", required=True)
    sp = with_config(it.add_parser("check", help="get Entra tokens and discover the Intune services"))
    sp.set_defaults(func=cmd_intune_check)
    sp = with_config(it.add_parser("credential", help="generate the Entra app's key on the token and its certificate"))
    sp.add_argument("--label", default="scepd-intune", help="token object label for the key")
    sp.add_argument("--subject", default="CN=scepd Intune connector")
    sp.add_argument("--days", type=int, default=730)
    sp.add_argument("--out", required=True, help="where to write the certificate (PEM) to upload to Entra")
    sp.set_defaults(func=cmd_intune_credential)
    sp = with_config(it.add_parser("notifications", help="what Intune was told about issued certificates"))
    sp.add_argument("--transaction", help="only this SCEP transactionID")
    sp.add_argument("--limit", type=int, default=50)
    sp.set_defaults(func=cmd_intune_notifications)
    sp = with_config(
        it.add_parser("sync", help="pull Intune's revocation requests now (the daemon also does it on a timer)")
    )
    sp.set_defaults(func=cmd_intune_sync)

    cli_certs.add_commands(sub, with_config)
    cli_pending.add_commands(sub, with_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    logs.setup(str(args.log_level).upper())
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - every failure ends in one line and its exit code
        return cli_errors.report(e, debug=str(args.log_level).upper() == "DEBUG")


if __name__ == "__main__":
    sys.exit(main())
