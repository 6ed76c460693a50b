#!/usr/bin/env bash
# Create (idempotently) a SoftHSM2 token labelled "scepd" under <state-dir>.
#   <state-dir>/softhsm/tokens         token store (0700)
#   <state-dir>/softhsm/softhsm2.conf  SOFTHSM2_CONF for scepd
#   <state-dir>/secrets/token.pin      user PIN (0600)
#   <state-dir>/secrets/token.so-pin   SO PIN (0600)
# Prints the SOFTHSM2_CONF path on stdout. Needs no root.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 <state-dir>" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
label="${SCEPD_TOKEN_LABEL:-scepd}"
umask 077
mkdir -p "$1"
state="$(cd "$1" && pwd)"
tokendir="$state/softhsm/tokens"
conf="$state/softhsm/softhsm2.conf"
secrets="$state/secrets"
mkdir -p "$tokendir" "$secrets"
chmod 0700 "$state/softhsm" "$tokendir" "$secrets"
sed "s|@TOKENDIR@|$tokendir|" "$here/softhsm2.conf.in" > "$conf.tmp"
mv "$conf.tmp" "$conf"
export SOFTHSM2_CONF="$conf"

if ! softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]*Label:[[:space:]]+$label[[:space:]]*$"; then
  pin="$(head -c 18 /dev/urandom | base64 | tr -d '/+=' | head -c 20)"
  so_pin="$(head -c 18 /dev/urandom | base64 | tr -d '/+=' | head -c 20)"
  printf '%s\n' "$pin" > "$secrets/token.pin.tmp"
  printf '%s\n' "$so_pin" > "$secrets/token.so-pin.tmp"
  chmod 0600 "$secrets/token.pin.tmp" "$secrets/token.so-pin.tmp"
  softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" --pin "$pin" >/dev/null
  mv "$secrets/token.pin.tmp" "$secrets/token.pin"
  mv "$secrets/token.so-pin.tmp" "$secrets/token.so-pin"
elif [ ! -s "$secrets/token.pin" ]; then
  echo "$0: token '$label' exists in $tokendir but $secrets/token.pin is missing" >&2
  exit 1
fi
echo "$conf"
