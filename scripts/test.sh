#!/usr/bin/env bash
# The project's test command: installs what is missing, then lint, types, and both test tiers.
# Integration tests start a real Neo4j through testcontainers (Docker, or Podman's socket here).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# The Podman service: where it does not answer yet, the bootstrap starts it
# (docker/setup-podman.sh, which records its process id); this script stops it again on the way
# out, unless containers it did not start still run there.
podman_socket=/run/podman/podman.sock
podman_pid=/run/podman/service.pid
podman_answers() {
  curl -fsS --max-time 3 --unix-socket "$podman_socket" http://d/_ping >/dev/null 2>&1
}
stop_podman() {
  local pid
  pid=$(cat "$podman_pid" 2>/dev/null) || return 0
  if [ -n "$(podman ps -q 2>/dev/null)" ]; then
    echo "[test] leaving the Podman service (pid $pid) running: containers still use it" >&2
    return 0
  fi
  echo "[test] stopping the Podman service this run started (pid $pid)" >&2
  ${SUDO:-} kill "$pid" 2>/dev/null || true
}
[ "$(id -u)" = 0 ] || SUDO=sudo
podman_was_up=false
podman_answers && podman_was_up=true

bash scripts/bootstrap.sh --containers
if ! $podman_was_up && podman_answers; then
  trap stop_podman EXIT
fi

if [ -z "${DOCKER_HOST:-}" ] && ! docker info >/dev/null 2>&1; then
  # No Docker engine: talk to Podman's Docker-compatible socket (see docker/setup-podman.sh).
  export DOCKER_HOST=unix:///run/podman/podman.sock
  export TESTCONTAINERS_RYUK_DISABLED=true
  export TESTCONTAINERS_CONNECTION_MODE=docker_host
  export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1
fi

# Passive OpenMP waiting: spinning torch threads starve everything else on a loaded machine
# (see circuitstore/__init__.py); exported here because pytest plugins may import torch first.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

.venv/bin/ruff check .
.venv/bin/ruff format --check .
bash scripts/typecheck.sh
# The docs site (mkdocs.yml): a broken link, anchor or include is a warning, and fails the build.
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
# CI=1 makes a missing container runtime fail the run instead of skipping the integration tier.
CI=${CI:-1} .venv/bin/pytest "$@"
