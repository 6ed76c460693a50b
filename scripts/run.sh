#!/usr/bin/env bash
# One command from a fresh machine to a running daemon: install, create the embedded
# default in ./var (SoftHSM2 token, CA on it, SQLite store, static challenge), serve.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
.venv/bin/scepd init --state var "$@"
exec .venv/bin/scepd serve --config var/scepd.toml --show-challenge
