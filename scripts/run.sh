#!/usr/bin/env bash
# One command from a fresh machine to a running daemon: install, create the embedded
# default in ./var (SoftHSM2 token, CA on it, SQLite store, static challenge), serve.
#
# With --token tpm the keys go into a TPM 2.0 instead, and the state into ./var-tpm: a software
# TPM (scripts/swtpm.sh: swtpm, a private D-Bus bus and tpm2-abrmd, all in var-tpm/swtpm) is
# started first and stopped again when scepd stops. A real TPM needs no script (docs/keys.md).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
tpm=no prev=
for arg in "$@"; do
  { [ "$prev" = --token ] && [ "$arg" = tpm ]; } || [ "$arg" = --token=tpm ] && tpm=yes
  prev=$arg
done
if [ "$tpm" = no ]; then
  .venv/bin/scepd init --state var "$@"
  exec .venv/bin/scepd serve --config var/scepd.toml --show-challenge
fi

eval "$(./scripts/swtpm.sh start var-tpm)"
scepd_pid=
stop() {
  trap - EXIT INT TERM
  if [ -n "$scepd_pid" ]; then
    kill -TERM "$scepd_pid" 2>/dev/null || true
    wait "$scepd_pid" 2>/dev/null || true
  fi
  ./scripts/swtpm.sh stop var-tpm
}
trap stop EXIT
trap 'stop; exit 143' TERM
trap 'stop; exit 130' INT
.venv/bin/scepd init --state var-tpm --tcti tabrmd:bus_type=session "$@"
.venv/bin/scepd serve --config var-tpm/scepd.toml --show-challenge &
scepd_pid=$!
status=0
wait "$scepd_pid" || status=$?
scepd_pid=
exit "$status"
