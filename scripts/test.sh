#!/usr/bin/env bash
# The project's test command: installs what is missing, then lint, types, and both test tiers.
# Integration tests start a real Neo4j through testcontainers (Docker, or Podman's socket here).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/bootstrap.sh --containers

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
# CI=1 makes a missing container runtime fail the run instead of skipping the integration tier.
CI=${CI:-1} .venv/bin/pytest "$@"
