#!/usr/bin/env bash
# Removes what scripts/install.sh installed: stops and disables the service, removes the unit, the
# venv (/opt/enapter-gateway) and the system user enapter-gateway. The configuration
# (/etc/enapter-gateway, and drop-ins in /etc/systemd/system/enapter-gateway.service.d) and the data
# (/var/lib/enapter-gateway: database, certificate authority) stay unless --purge is given.
# Debian's mosquitto.service is left as it is (install.sh may have disabled it). Idempotent.
#
# Usage: sudo scripts/uninstall.sh [--purge] [--root DIR]
#   --purge     also delete the configuration and the data.
#   --root DIR  remove what `install.sh --root DIR` laid down under DIR; no systemctl.
set -euo pipefail

NAME=enapter-gateway

say() { printf 'uninstall: %s\n' "$*"; }
die() {
  printf 'uninstall: error: %s\n' "$*" >&2
  exit 1
}
usage() { sed -n '/^# Usage:/,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

root=""
purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root)
      [ $# -ge 2 ] || die "--root needs a directory"
      root=$2
      shift 2
      ;;
    --purge)
      purge=1
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument: $1"
      ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root, e.g. sudo $0"
if [ -n "$root" ]; then
  [ -d "$root" ] || die "$root is not a directory"
  root=$(realpath "$root")
  [ "$root" != / ] || root=""
  if [ -n "$root" ]; then say "removing from under $root"; fi
fi

opt=$root/opt/$NAME
etc=$root/etc/$NAME
state=$root/var/lib/$NAME
unit=$root/etc/systemd/system/$NAME.service

# --- systemd -------------------------------------------------------------------------------------
if [ -n "$root" ]; then
  say "skipping systemctl (--root)"
elif [ -d /run/systemd/system ]; then
  if systemctl cat "$NAME.service" >/dev/null 2>&1; then
    say "systemctl disable --now $NAME.service"
    systemctl disable --now --quiet "$NAME.service"
  fi
else
  say "systemd is not running here (no /run/systemd/system): nothing to stop"
fi
say "removing the unit $unit"
rm -f "$unit" "$root/etc/systemd/system/multi-user.target.wants/$NAME.service"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl reset-failed "$NAME.service" 2>/dev/null || true
fi

# --- The venv ------------------------------------------------------------------------------------
say "removing $opt (the venv)"
rm -rf "$opt"

# --- The system user -----------------------------------------------------------------------------
if [ -z "$root" ]; then
  if getent passwd "$NAME" >/dev/null; then
    say "userdel $NAME"
    userdel "$NAME"
  fi
  if getent group "$NAME" >/dev/null; then
    groupdel "$NAME"
  fi
elif [ -f "$root/etc/passwd" ]; then
  if grep -q "^$NAME:" "$root/etc/passwd"; then
    say "userdel --prefix $root $NAME"
    userdel --prefix "$root" "$NAME"
  fi
  if grep -q "^$NAME:" "$root/etc/group"; then
    groupdel --prefix "$root" "$NAME"
  fi
fi

# --- Configuration and data ----------------------------------------------------------------------
# Drop-ins from `systemctl edit enapter-gateway` are configuration too.
if [ "$purge" -eq 1 ]; then
  say "removing $etc, $state and $unit.d (--purge)"
  rm -rf "$etc" "$state" "$unit.d"
else
  for kept in "$etc" "$state" "$unit.d"; do
    if [ -e "$kept" ]; then say "keeping $kept (--purge removes it)"; fi
  done
fi
say "done"
