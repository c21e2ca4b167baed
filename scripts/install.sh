#!/usr/bin/env bash
# Installs enapter-gateway as a systemd service on Raspberry Pi OS (bookworm) or Debian 12, from the
# checkout this script is in:
#   - apt packages mosquitto and python3-venv, if missing;
#   - the system user enapter-gateway (no login, no home);
#   - the package in a venv at /opt/enapter-gateway/venv (pip install of this checkout);
#   - /etc/enapter-gateway/config.toml from config.example.toml with api.port = 80 and
#     gateway.state_dir = "/var/lib/enapter-gateway" (an existing config is kept as it is),
#     root:enapter-gateway 0640 in a 0750 directory, checked with `enapter-gateway check-config`;
#   - the state directory /var/lib/enapter-gateway (enapter-gateway, 0700);
#   - systemd/enapter-gateway.service into /etc/systemd/system/, then daemon-reload, enable and
#     (re)start; Debian's own mosquitto.service is stopped and disabled when the gateway manages its
#     own broker (mqtt.mode = "managed"), since it would hold port 1883.
# Idempotent: run it again after `git pull` to upgrade; the config and the data stay.
#
# Usage: sudo scripts/install.sh [--no-start] [--root DIR]
#   --no-start  enable the service (it starts at boot) but do not start or restart it now.
#   --root DIR  lay everything down under DIR instead of /, for tests and inspection: no apt, no
#               systemctl; the user goes into DIR/etc/passwd (useradd --prefix). The venv's scripts
#               name DIR/opt/enapter-gateway/venv/bin/python, so that venv runs from there only.
set -euo pipefail
# The venv must be readable by the service's user whatever root's own umask is.
umask 022
# Whatever the caller's shell has, the venv is checked the way systemd will run it.
unset PYTHONPATH PYTHONHOME

NAME=enapter-gateway
SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf 'install: %s\n' "$*"; }
die() {
  printf 'install: error: %s\n' "$*" >&2
  exit 1
}
usage() { sed -n '/^# Usage:/,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

root=""
start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --root)
      [ $# -ge 2 ] || die "--root needs a directory"
      root=$2
      shift 2
      ;;
    --no-start)
      start=0
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
  mkdir -p "$root"
  root=$(realpath "$root")
  [ "$root" != / ] || root=""
fi
for needed in pyproject.toml config.example.toml "systemd/$NAME.service"; do
  [ -f "$SOURCE/$needed" ] || die "$SOURCE/$needed is missing: run the script from a checkout"
done

opt=$root/opt/$NAME
venv=$opt/venv
etc=$root/etc/$NAME
config=$etc/config.toml
state=$root/var/lib/$NAME
unit=$root/etc/systemd/system/$NAME.service
if [ -n "$root" ]; then say "installing under $root"; fi

# --- Packages ----------------------------------------------------------------------------------
if [ -z "$root" ]; then
  missing=()
  for package in mosquitto python3-venv; do
    # ${Status} is dpkg-query's field, not a shell variable.
    # shellcheck disable=SC2016
    dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q '^install ok installed$' ||
      missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    say "apt packages mosquitto and python3-venv are installed"
  fi
else
  say "skipping apt (--root)"
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "python3 is $(python3 -V 2>&1); enapter-gateway needs 3.11 or newer (Debian 12)"
python3 -c 'import ensurepip, venv' 2>/dev/null || die "python3 has no venv module: apt-get install python3-venv"

# --- The system user -----------------------------------------------------------------------------
user_args=(--system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin
  --comment "enapter-gateway daemon")
if [ -z "$root" ]; then
  if getent passwd "$NAME" >/dev/null; then
    say "system user $NAME exists"
  else
    say "useradd $NAME (system user, no login, no home)"
    useradd "${user_args[@]}" "$NAME"
  fi
  uid=$(id -u "$NAME")
  gid=$(getent group "$NAME" | cut -d: -f3)
else
  install -d -m 0755 "$root/etc"
  for file in passwd group; do [ -e "$root/etc/$file" ] || install -m 0644 /dev/null "$root/etc/$file"; done
  for file in shadow gshadow; do [ -e "$root/etc/$file" ] || install -m 0640 /dev/null "$root/etc/$file"; done
  if grep -q "^$NAME:" "$root/etc/passwd"; then
    say "system user $NAME exists in $root/etc/passwd"
  else
    say "useradd --prefix $root $NAME (system user, no login, no home)"
    useradd --prefix "$root" "${user_args[@]}" "$NAME"
  fi
  uid=$(awk -F: -v name="$NAME" '$1 == name { print $3 }' "$root/etc/passwd")
  gid=$(awk -F: -v name="$NAME" '$1 == name { print $3 }' "$root/etc/group")
fi
[ -n "$uid" ] && [ -n "$gid" ] || die "user or group $NAME was not found after creating it"

# --- The venv ------------------------------------------------------------------------------------
install -d -m 0755 "$opt"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c '' 2>/dev/null; then
  say "reusing the venv $venv"
else
  # Gone, or left broken by a Python upgrade.
  rm -rf "$venv"
  say "python3 -m venv $venv"
  python3 -m venv "$venv"
fi
say "pip install $SOURCE into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$SOURCE"
# The unit's Documentation= points at the README; the example documents every config key.
install -m 0644 "$SOURCE/README.md" "$SOURCE/config.example.toml" "$opt/"
version=$("$venv/bin/enapter-gateway" --version) || die "the installed enapter-gateway does not run (above)"
say "installed $version"

# --- State directory -----------------------------------------------------------------------------
# systemd makes it at the first start (StateDirectory=); made here too so that `token create`
# works before that. After an uninstall without --purge the user may come back with a new uid.
if [ -d "$state" ] && [ "$(stat -c %u:%g "$state")" != "$uid:$gid" ]; then
  say "chown -R $NAME: $state (it belonged to another uid)"
  chown -R "$uid:$gid" "$state"
fi
install -d -m 0700 -o "$uid" -g "$gid" "$state"

# --- Configuration -------------------------------------------------------------------------------
install -d -m 0750 -o 0 -g "$gid" "$etc"
if [ -e "$config" ]; then
  say "keeping the existing $config"
else
  say "writing $config from config.example.toml (api.port = 80, gateway.state_dir = /var/lib/$NAME)"
  draft=$(mktemp "$etc/.config.toml.XXXXXX")
  trap 'rm -f "$draft"' EXIT
  # Only `port` under [api] (not [mqtt]'s or [mqtt.external]'s) and `state_dir` under [gateway];
  # exactly one of each, or the example changed shape and this edit must be looked at again.
  if ! awk -v state="/var/lib/$NAME" '
    /^[[:space:]]*\[/ {
      section = $0
      sub(/^[[:space:]]*\[+[[:space:]]*/, "", section)
      sub(/[[:space:]]*\].*$/, "", section)
    }
    /^# As written, / {
      print "# Written by scripts/install.sh: the HTTP API listens on port 80 (the service may bind it)"
      print "# and state goes to " state "."
      intro = 1
      next
    }
    intro && /^# ./ { next }
    { intro = 0 }
    section == "api" && /^[[:space:]]*port[[:space:]]*=/ { print "port = 80"; ports++; next }
    section == "gateway" && /^[[:space:]]*state_dir[[:space:]]*=/ {
      print "state_dir = \"" state "\""
      dirs++
      next
    }
    { print }
    END { exit (ports == 1 && dirs == 1) ? 0 : 3 }
  ' "$SOURCE/config.example.toml" >"$draft"; then
    die "config.example.toml has no single [api] port and [gateway] state_dir to set"
  fi
  chown "0:$gid" "$draft"
  chmod 0640 "$draft"
  mv "$draft" "$config"
  trap - EXIT
fi
# The service's user must be able to read it, whoever last touched it.
chown "0:$gid" "$config"
chmod 0640 "$config"
say "$etc root:$NAME 0750, $config root:$NAME 0640"

if [ -z "$root" ]; then
  # As the service's user: proves it can read the config and run the venv.
  say "check-config $config (as $NAME)"
  check=(setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$venv/bin/enapter-gateway")
else
  say "check-config $config (as root: $NAME exists only in $root/etc/passwd)"
  check=("$venv/bin/enapter-gateway")
fi
"${check[@]}" check-config "$config" || die "$config has problems (listed above); fix them and run this again"

# --- systemd -------------------------------------------------------------------------------------
say "installing the unit $unit"
install -D -m 0644 "$SOURCE/systemd/$NAME.service" "$unit"

if [ -n "$root" ]; then
  say "skipping systemctl (--root): daemon-reload, enable, start"
elif [ ! -d /run/systemd/system ]; then
  say "systemd is not running here (no /run/systemd/system): the unit is installed, not enabled;"
  say "on a system booted with systemd: systemctl enable --now $NAME.service"
else
  systemctl daemon-reload
  mode=$("$venv/bin/python" -c \
    'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb")).get("mqtt", {}).get("mode", "managed"))' \
    "$config")
  if [ "$mode" = managed ] && systemctl cat mosquitto.service >/dev/null 2>&1; then
    if systemctl is-enabled --quiet mosquitto.service || systemctl is-active --quiet mosquitto.service; then
      say "systemctl disable --now mosquitto.service (the gateway runs its own Mosquitto on 1883)"
      systemctl disable --now mosquitto.service
    fi
  fi
  say "systemctl enable $NAME.service"
  systemctl enable --quiet "$NAME.service"
  if [ "$start" -eq 1 ]; then
    # Type=notify: this returns once the API serves, or fails if the daemon does not get there.
    say "systemctl restart $NAME.service"
    systemctl restart "$NAME.service" || die "$NAME did not start; see: journalctl -u $NAME -e"
    say "$NAME is $(systemctl is-active "$NAME.service")"
  elif systemctl is-active --quiet "$NAME.service"; then
    say "not restarting it (--no-start): it runs the previous version until: systemctl restart $NAME"
  else
    say "not starting it (--no-start); it starts at boot, or now with: systemctl start $NAME"
  fi
fi

say "done. Logs: journalctl -u $NAME. First API token:"
say "  sudo -u $NAME $venv/bin/enapter-gateway token create --role OWNER --config $config"
