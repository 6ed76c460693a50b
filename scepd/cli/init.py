"""`scepd init`: the embedded default (SoftHSM2 token, CA, RA, config) in a state directory; idempotent."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scepd.cli.ca import RA_DAYS, ensure_ra
from scepd.cli.common import Subparsers, WithConfig, parse_subject
from scepd.clock import utc_now

REPO = Path(__file__).resolve().parent.parent.parent

DEFAULT_TOML = """\
# scepd embedded default: SoftHSM2 token, SQLite store, static challenge.
# Every setting is described in docs/configuration.md.
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
    import trio

    from scepd.config import load

    state = Path(args.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    if args.token == "tpm":
        from scepd.cli import tpm as cli_tpm

        cli_tpm.prepare_state(state, args.tcti)
    else:
        subprocess.run(
            ["bash", str(REPO / "softhsm" / "init-token.sh"), str(state)], check=True, stdout=subprocess.DEVNULL
        )
    secret_file = state / "secrets" / "challenge"
    if not secret_file.exists():
        secret_file.write_text((args.challenge or secrets.token_urlsafe(18)) + "\n")
        secret_file.chmod(0o600)
    config_file = state / "scepd.toml"
    if not config_file.exists():
        # A TPM, not the CPU, limits a TPM token's rate: one serving process with one token thread.
        layout = ServingLayout(1, 0) if args.token == "tpm" else serving_layout(os.cpu_count() or 1)
        # A free SCEP port (tests, several instances) gets a free metrics port too.
        metrics_listen = args.metrics_listen or ("127.0.0.1:0" if args.listen.endswith(":0") else "127.0.0.1:9108")
        text = DEFAULT_TOML.format(
            listen=args.listen,
            metrics_listen=metrics_listen,
            module=args.module,
            workers=layout.token_workers if args.workers is None else args.workers,
            processes=layout.processes if args.processes is None else args.processes,
            ra="" if args.no_ra else RA_TOML,
        )
        if args.token == "tpm":
            from scepd.cli import tpm as cli_tpm

            text = cli_tpm.config_text(text, args.tcti)
        config_file.write_text(text)
    config = load(config_file)
    from scepd.ca.setup import KeySpec, init_ca
    from scepd.keys.pkcs11.pool import ensure_reject_secret
    from scepd.wiring import key_label, token_config

    lone = config.ca.ra_key is None
    if not config.ca.certificate.exists():
        trio.run(
            init_ca,
            token_config(config),
            key_label(config.ca.key),
            config.ca.certificate,
            parse_subject(args.subject),
            KeySpec("rsa", args.key_size, decrypt=lone),
            dt.timedelta(days=3650),
            utc_now(),
        )
        usage = "signs and opens envelopes (no RA)" if lone else "sign only"
        print(f"scepd: created CA {args.subject} on the token ({usage}); certificate {config.ca.certificate}")
    if lone and args.token == "tpm":
        print("scepd: warning: a TPM holds no rejection secret; each token session makes its own (docs/keys.md)")
    elif lone:
        ensure_reject_secret(token_config(config), key_label(config.ca.key))
        print(
            "scepd: warning: this state has no RA, so the CA key opens envelopes; add one with "
            f"`scepd ca ra-init --config {config_file}` (docs/keys.md)"
        )
    else:
        ra = ensure_ra(config, parse_subject(args.ra_subject) if args.ra_subject else None, 2048, RA_DAYS)
        if ra is not None:
            print(
                f"scepd: created RA {ra.subject.rfc4514_string()} on the token; certificate "
                f"{config.ca.ra_certificate} (until {ra.not_valid_after_utc:%Y-%m-%d})"
            )
    print(f"scepd: state ready in {state}; config {config_file}")
    return 0


def add_commands(sub: Subparsers, with_config: WithConfig) -> None:
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
    sp.add_argument(
        "--token",
        choices=["softhsm", "tpm"],
        default="softhsm",
        help="where the CA and RA keys live: a SoftHSM2 token (default) or the TPM 2.0 through tpm2-pkcs11",
    )
    sp.add_argument(
        "--tcti",
        default="device:/dev/tpmrm0",
        help="with --token tpm: how to reach the TPM (default device:/dev/tpmrm0; tabrmd:bus_type=session, swtpm:...)",
    )
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
