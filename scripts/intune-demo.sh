#!/usr/bin/env bash
# An Intune enrollment end to end on one machine (fake Intune, scepd, certmonger): see docs/intune.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || ./scripts/install.sh
exec .venv/bin/python scripts/intune_demo.py "$@"
