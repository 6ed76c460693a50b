#!/usr/bin/env bash
# Install what scepd needs on a Debian machine (run as root for the Debian packages):
# SoftHSM2 for the token, OpenSSL, and the SCEP clients the tests drive (certmonger,
# micromdm's scep), a software TPM 2.0 with its resource manager and tpm2-pkcs11 (the TPM
# token, tests/support/tpm.py), PostgreSQL (private servers for the store tests), then a virtual environment in .venv with scepd and its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(softhsm2 opensc openssl certmonger scep sqlite3 python3-venv systemd prometheus tinyproxy
  swtpm swtpm-tools tpm2-abrmd libtss2-tcti-tabrmd0 libtss2-tcti-swtpm0 tpm2-tools libtpm2-pkcs11-1
  libtpm2-pkcs11-tools dbus-daemon dbus-bin dbus-session-bus-common postgresql)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: missing Debian packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # certmonger's package enables a system daemon we do not use; tests run private instances.
  systemctl disable --now certmonger >/dev/null 2>&1 || true
  # prometheus is installed for promtool (tests/test_deploy.py); its server is not wanted here.
  systemctl disable --now prometheus >/dev/null 2>&1 || true
  # tpm2-abrmd's system service wants a real TPM; tests and `scepd init --token tpm` run their own.
  systemctl disable --now tpm2-abrmd >/dev/null 2>&1 || true
  # postgresql: tests start private servers (tests/support/postgres.py); the cluster the package makes is not used.
  systemctl disable --now postgresql >/dev/null 2>&1 || true
  pg_ctlcluster 15 main stop >/dev/null 2>&1 || true  # without systemd the package starts it directly
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# pip runs again only when pyproject.toml changed since the last install (a second ./scripts/run.sh
# then needs no network).
stamp=.venv/.scepd-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" >"$stamp"
fi
