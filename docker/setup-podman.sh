#!/usr/bin/env bash
# Make Podman usable as a local Docker engine for testcontainers, with no registry access.
#
# Idempotent: every step checks before it changes anything, so running it twice is harmless.
#   1. installs podman, runc and debootstrap from Debian (only when one is missing);
#   2. merges three settings into /etc/containers/containers.conf: the runc runtime and the
#      cgroupfs cgroup manager (crun and the systemd manager are refused by sandboxed
#      machines), and no default ulimits (raising them is refused there too);
#   3. starts `podman system service` on a Docker-compatible socket unless one already answers,
#      and records its process id in /run/podman/service.pid (scripts/test.sh stops what it
#      started);
#   4. prints the environment testcontainers needs.
#
# Usage: docker/setup-podman.sh            (as root, or as a user with sudo)
#        eval "$(docker/setup-podman.sh --print-env)"   to only print the exports
set -euo pipefail

SOCKET_DIR=/run/podman
SOCKET="$SOCKET_DIR/podman.sock"
CONF=/etc/containers/containers.conf
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { echo "setup-podman: $*" >&2; }

print_env() {
  # Ryuk's image cannot be pulled without a registry; the docker_host mode makes
  # testcontainers use the published port on loopback instead of container IPs.
  cat <<EOF
export DOCKER_HOST=unix://$SOCKET
export TESTCONTAINERS_RYUK_DISABLED=true
export TESTCONTAINERS_CONNECTION_MODE=docker_host
export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1
EOF
}

install_packages() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  if [ "${#missing[@]}" -eq 0 ]; then
    log "podman, runc and debootstrap are installed"
    return
  fi
  log "installing ${missing[*]}"
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y podman runc debootstrap
}

# set_key FILE SECTION KEY VALUE: make `KEY = VALUE` the live setting of [SECTION] in a TOML
# file. An uncommented KEY in that section is replaced where it stands; otherwise the line goes
# right under the section header, and a missing section is appended. Comments and other keys
# stay as they are, and a file that already holds the setting is not rewritten.
set_key() {
  local file="$1" section="$2" key="$3" value="$4" tmp
  tmp="$(mktemp)"
  awk -v section="[$section]" -v key="$key" -v line="$key = $value" '
    /^[[:space:]]*\[/ {
      hdr = $0; gsub(/[[:space:]]/, "", hdr)
      in_sec = (hdr == section)
      print
      if (in_sec) { seen = 1; hdr_line = NR }
      next
    }
    in_sec && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      if (!done) print line
      done = 1
      next
    }
    { print }
    END { if (!seen) { print ""; print section; print line } else if (!done) print "@@INSERT@@" hdr_line }
  ' "$file" >"$tmp"
  # awk cannot go back to insert under an earlier header, so a second pass does it.
  local at
  at="$(sed -n 's/^@@INSERT@@//p' "$tmp")"
  if [ -n "$at" ]; then
    sed -i '/^@@INSERT@@/d' "$tmp"
    sed -i "${at}a\\$key = $value" "$tmp"
  fi
  if ! cmp -s "$tmp" "$file"; then $SUDO cp "$tmp" "$file"; fi
  rm -f "$tmp"
}

configure() {
  $SUDO mkdir -p "$(dirname "$CONF")"
  [ -f "$CONF" ] || echo "# Written by circuitstore docker/setup-podman.sh" | $SUDO tee "$CONF" >/dev/null
  local before
  before="$(sha256sum "$CONF")"
  set_key "$CONF" containers default_ulimits "[]"
  set_key "$CONF" engine runtime '"runc"'
  set_key "$CONF" engine cgroup_manager '"cgroupfs"'
  if [ "$before" = "$(sha256sum "$CONF")" ]; then
    log "$CONF already has runtime=runc, cgroup_manager=cgroupfs, default_ulimits=[]"
  else
    log "updated $CONF"
  fi
}

socket_answers() {
  curl -fsS --max-time 3 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1
}

# A service whose working directory was deleted (say, a CI clone) still answers, but every
# container start fails ("write child: broken pipe": conmon cannot get its working directory).
stale_service() {
  local pid
  for pid in $(pgrep -f "podman system service .*unix://$SOCKET" || true); do
    if readlink "/proc/$pid/cwd" 2>/dev/null | grep -q ' (deleted)$'; then
      echo "$pid"
      return
    fi
  done
}

start_service() {
  if socket_answers; then
    local stale
    stale=$(stale_service)
    if [ -n "$stale" ]; then
      log "the podman service on $SOCKET (pid $stale) runs in a deleted directory and cannot start"
      log "containers; stop it (kill $stale) and run this script again"
      exit 1
    fi
    log "podman service already answers on $SOCKET"
    return
  fi
  $SUDO mkdir -p "$SOCKET_DIR"
  log "starting podman system service on $SOCKET (log: $SOCKET_DIR/service.log)"
  # setsid + nohup: the service must outlive this script and the shell that ran it. It runs
  # from / so that it never holds on to (or loses) the caller's directory.
  (
    cd / || exit 1
    $SUDO setsid nohup podman system service --time=0 "unix://$SOCKET" \
      >"$SOCKET_DIR/service.log" 2>&1 </dev/null &
    echo $! | $SUDO tee "$SOCKET_DIR/service.pid" >/dev/null
  )
  for _ in $(seq 1 50); do
    socket_answers && { log "podman service is up"; return; }
    sleep 0.2
  done
  log "podman service did not answer on $SOCKET; see $SOCKET_DIR/service.log"
  exit 1
}

if [ "${1:-}" = "--print-env" ]; then
  print_env
  exit 0
fi
install_packages
configure
start_service
echo "# Export these before running testcontainers against Podman:"
print_env
