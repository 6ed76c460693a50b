"""The `scepd` command line: set up a CA on the token, run the daemon, admin tasks."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import logging
import os
import secrets
import subprocess
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import trio
from cryptography import x509

from scepd import cli_certs, cli_pending, logs
from scepd.config import Config, ConfigError, load, read_secret

DEFAULT_CONFIG = os.environ.get("SCEPD_CONFIG", "/etc/scepd/scepd.toml")
REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("scepd")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _subject(text: str) -> x509.Name:
    try:
        return x509.Name.from_rfc4514_string(text)
    except ValueError as e:
        raise SystemExit(f"invalid subject {text!r}: {e}") from None


def _config(args: argparse.Namespace) -> Config:
    try:
        return load(Path(args.config))
    except ConfigError as e:
        raise SystemExit(f"scepd: invalid configuration: {e}") from None


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _config(args)
    print(f"{config.path}: ok ({len(config.endpoints)} endpoint(s), {len(config.profiles)} profile(s))")
    return 0


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


def cmd_init(args: argparse.Namespace) -> int:
    """Create the embedded default in a state directory; idempotent."""
    state = Path(args.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    subprocess.run(["bash", str(REPO / "softhsm" / "init-token.sh"), str(state)], check=True,
                   stdout=subprocess.DEVNULL)
    secret_file = state / "secrets" / "challenge"
    if not secret_file.exists():
        secret_file.write_text((args.challenge or secrets.token_urlsafe(18)) + "\n")
        secret_file.chmod(0o600)
    config_file = state / "scepd.toml"
    if not config_file.exists():
        # A free SCEP port (tests, several instances) gets a free metrics port too.
        metrics_listen = args.metrics_listen or ("127.0.0.1:0" if args.listen.endswith(":0") else "127.0.0.1:9108")
        config_file.write_text(DEFAULT_TOML.format(
            listen=args.listen, metrics_listen=metrics_listen, module=args.module, workers=args.workers,
            processes=args.processes))
    config = load(config_file)
    if not config.ca.certificate.exists():
        from scepd.ca.setup import KeySpec, init_ca
        from scepd.server import key_label, token_config

        trio.run(init_ca, token_config(config), key_label(config.ca.key), config.ca.certificate,
                 _subject(args.subject), KeySpec("rsa", 3072), dt.timedelta(days=3650), _now())
        print(f"scepd: created CA {args.subject} on the token; certificate {config.ca.certificate}")
    print(f"scepd: state ready in {state}; config {config_file}")
    return 0


def cmd_ca_init(args: argparse.Namespace) -> int:
    from scepd.ca.setup import KeySpec, init_ca
    from scepd.server import key_label, token_config

    config = _config(args)
    spec = KeySpec(args.key_type, args.key_size, args.curve)
    cert = trio.run(init_ca, token_config(config), key_label(config.ca.key), config.ca.certificate,
                    _subject(args.subject), spec, dt.timedelta(days=args.days), _now())
    print(f"CA {cert.subject.rfc4514_string()} created; certificate written to {config.ca.certificate}")
    return 0


def cmd_ca_csr(args: argparse.Namespace) -> int:
    from scepd.ca.setup import KeySpec, ca_request
    from scepd.server import key_label, token_config

    config = _config(args)
    spec = KeySpec(args.key_type, args.key_size, args.curve) if args.generate else None
    pem = trio.run(ca_request, token_config(config), key_label(config.ca.key), _subject(args.subject), spec)
    Path(args.out).write_bytes(pem)
    print(f"CSR for the CA key written to {args.out}")
    return 0


def cmd_ca_import(args: argparse.Namespace) -> int:
    from scepd.ca.setup import import_ca_certificate
    from scepd.server import key_label, token_config

    config = _config(args)
    cert = trio.run(import_ca_certificate, token_config(config), key_label(config.ca.key),
                    Path(args.certificate).read_bytes(), config.ca.certificate)
    print(f"imported {cert.subject.rfc4514_string()} as {config.ca.certificate}")
    return 0


def cmd_ca_ra(args: argparse.Namespace) -> int:
    from scepd.ca.setup import init_ra
    from scepd.server import key_label, token_config

    config = _config(args)
    if not (config.ca.ra_key and config.ca.ra_certificate):
        raise SystemExit("set ca.ra_key and ca.ra_certificate in the configuration first")
    ca_cert = x509.load_pem_x509_certificate(config.ca.certificate.read_bytes())
    cert = trio.run(init_ra, token_config(config), key_label(config.ca.key), ca_cert,
                    key_label(config.ca.ra_key), config.ca.ra_certificate, _subject(args.subject),
                    args.key_size, dt.timedelta(days=args.days), _now())
    print(f"RA {cert.subject.rfc4514_string()} created; certificate written to {config.ca.ra_certificate}")
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
        async with TokenPool.open(token_config(config)) as pool:
            async with SqliteStore.open(config.store_path) as store, intune_http(settings) as http:
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
    cert = trio.run(create_app_credential, token_config(config), args.label, _subject(args.subject),
                    Path(args.out), dt.timedelta(days=args.days), _now())
    print(f"key {args.label!r} generated on the token; certificate {cert.subject.rfc4514_string()} written to "
          f"{args.out}\nupload it to the Entra app registration, then set in [intune]:\n"
          f'client_certificate = "{Path(args.out).resolve()}"\n'
          f'client_key = "pkcs11:token={config.token.label};object={args.label};type=private"')
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
                print(f"{n.at.isoformat()} {n.kind.value:<7} {state:<13} serial={serial} "
                      f"transaction_id={n.transaction_id} detail={n.detail}")

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
    sp.add_argument("--metrics-listen", help="HOST:PORT of the metrics listener (default 127.0.0.1:9108;"
                    " 127.0.0.1:0 when --listen has port 0)")
    sp.add_argument("--challenge", help="static challenge to use (default: a random one)")
    sp.add_argument("--subject", default="CN=scepd development CA,O=scepd")
    sp.add_argument("--module", default="/usr/lib/softhsm/libsofthsm2.so")
    # 2: measured faster than the in-process thread under load, which the GIL slows (README).
    sp.add_argument("--workers", type=int, default=2,
                    help="token worker processes (0: one in-process thread; default 2)")
    sp.add_argument("--processes", type=int, default=1,
                    help="serving processes on the one port (server.processes; about one per core)")
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
    sp = with_config(ca.add_parser("ra-init", help="generate an RSA RA key on the token and its CA-signed certificate"))
    sp.add_argument("--subject", required=True)
    sp.add_argument("--key-size", type=int, choices=[2048, 3072, 4096], default=2048)
    sp.add_argument("--days", type=int, default=730)
    sp.set_defaults(func=cmd_ca_ra)

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
    sp = with_config(it.add_parser("sync", help="pull Intune's revocation requests now (the daemon also does it on a timer)"))
    sp.set_defaults(func=cmd_intune_sync)

    cli_certs.add_commands(sub, with_config)
    cli_pending.add_commands(sub, with_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    logs.setup(args.log_level)
    try:
        return int(args.func(args))
    except (ConfigError, FileExistsError, ValueError) as e:
        print(f"scepd: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
