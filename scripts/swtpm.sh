#!/usr/bin/env bash
# A software TPM 2.0 for trying scepd's TPM token on a machine without one (docs/keys.md, "TPM"):
# swtpm, a private D-Bus bus and the tpm2-abrmd resource manager, all on unix sockets in
# <state-dir>/swtpm (0700). Nothing listens on the network; the system bus is not used.
#
#   eval "$(scripts/swtpm.sh start var)"   # prints the DBUS_SESSION_BUS_ADDRESS to export
#   scripts/swtpm.sh stop var              # stops the three processes by their PID files
#
# A real TPM needs none of this: tpm2-pkcs11 reaches it through the kernel's /dev/tpmrm0.
set -euo pipefail
if [ $# -ne 2 ] || { [ "$1" != start ] && [ "$1" != stop ]; }; then
  echo "usage: $0 start|stop <state-dir>" >&2
  exit 2
fi
mkdir -p "$2"
dir="$(cd "$2" && pwd)/swtpm"

stop() {
  for name in abrmd dbus swtpm; do
    if [ -s "$dir/$name.pid" ]; then
      kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
      rm -f "$dir/$name.pid"
    fi
  done
}

if [ "$1" = stop ]; then
  stop
  exit 0
fi

umask 077
mkdir -p "$dir/state"
chmod 0700 "$dir"
if [ -s "$dir/dbus.pid" ] && kill -0 "$(cat "$dir/dbus.pid")" 2>/dev/null; then
  echo "export DBUS_SESSION_BUS_ADDRESS='$(head -1 "$dir/bus.address")'"
  exit 0
fi
stop
rm -f "$dir/tpm.sock" "$dir/tpm.sock.ctrl" "$dir/bus"

swtpm socket --tpm2 --tpmstate "dir=$dir/state,mode=0600" \
  --server "type=unixio,path=$dir/tpm.sock,mode=0600" --ctrl "type=unixio,path=$dir/tpm.sock.ctrl,mode=0600" \
  --flags not-need-init,startup-clear --pid "file=$dir/swtpm.pid" --log "file=$dir/swtpm.log" --daemon

dbus-daemon --session --address="unix:path=$dir/bus" --fork --print-address=3 --print-pid=4 \
  3>"$dir/bus.address" 4>"$dir/dbus.pid" 2>>"$dir/dbus.log"
export DBUS_SESSION_BUS_ADDRESS
DBUS_SESSION_BUS_ADDRESS="$(head -1 "$dir/bus.address")"

root=()
[ "$(id -u)" -eq 0 ] && root=(--allow-root)  # tpm2-abrmd refuses root unless told
for _ in $(seq 50); do [ -S "$dir/tpm.sock" ] && break; sleep 0.1; done
tpm2-abrmd --session --tcti="swtpm:path=$dir/tpm.sock" "${root[@]}" >>"$dir/abrmd.log" 2>&1 &
echo $! >"$dir/abrmd.pid"
for _ in $(seq 100); do
  if dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner string:com.intel.tss2.Tabrmd 2>/dev/null | grep -q "boolean true"; then
    echo "export DBUS_SESSION_BUS_ADDRESS='$DBUS_SESSION_BUS_ADDRESS'"
    exit 0
  fi
  sleep 0.1
done
echo "$0: tpm2-abrmd did not start; see $dir/abrmd.log" >&2
stop
exit 1
