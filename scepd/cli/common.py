"""What every `scepd` command group shares: the config it reads, how subjects are parsed, how
times are printed, and the shape of `add_commands`."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from cryptography import x509

    from scepd.config import Config

DEFAULT_CONFIG = os.environ.get("SCEPD_CONFIG", "/etc/scepd/scepd.toml")

WithConfig = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
# What `add_subparsers` returns; argparse names the class privately, and subscripts it only for type checkers.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def parse_subject(text: str) -> x509.Name:
    """An RFC 4514 subject from the command line; a bad one ends the command with its reason."""
    from cryptography import x509

    try:
        return x509.Name.from_rfc4514_string(text)
    except ValueError as e:
        raise SystemExit(f"invalid subject {text!r}: {e}") from None


def load_config(args: argparse.Namespace) -> Config:
    """The configuration named by --config."""
    from scepd.config import load

    # ConfigError (and OSError for an unreadable file) end in main(), with their own exit codes.
    return load(Path(args.config))


def time_text(when: dt.datetime | None) -> str:
    """A time as the listings print it (UTC, to the second), or "-"."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else "-"
