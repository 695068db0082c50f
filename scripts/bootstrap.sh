#!/usr/bin/env bash
# Installs what a fresh machine lacks; quick and silent when everything is already there.
#   scripts/bootstrap.sh              Java, Maven, the Python environment (.venv)
#   scripts/bootstrap.sh --containers also a container runtime, the local Neo4j image and
#                                     PostgreSQL (for the catalog tests) and Chromium (for the
#                                     viewer's browser tests)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { printf '[bootstrap] %s\n' "$*"; }

apt_install() {
  [ "$(id -u)" = 0 ] || { echo "need root to apt-get install $*; install them and rerun" >&2; exit 1; }
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    apt-get update -q >/dev/null
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

java_ok() { command -v java >/dev/null && java -version 2>&1 | grep -Eq 'version "(1[7-9]|2[0-9])'; }
java_ok || { say "installing Java 17"; apt_install openjdk-17-jre-headless; }
command -v mvn >/dev/null || { say "installing Maven"; apt_install maven; }

# Python: a venv in .venv, reinstalled only when pyproject.toml changes.
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || { say "creating .venv"; "$python" -m venv .venv; }
stamp=.venv/.circuitstore-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python packages (first time: a few minutes; torch is large)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  # The ingest extra (torch, TransformerLens...) and the test tools: everything CI runs.
  .venv/bin/pip install -q -e '.[ingest,dev]'
  echo "$want" >"$stamp"
fi

# The Neo4j jars, from Maven Central into ~/.m2 (shared by `server start` and the image).
mvn -q -B -f circuitstore/server/pom.xml dependency:resolve >/dev/null

if [ "${1:-}" = "--containers" ]; then
  if [ -z "${DOCKER_HOST:-}" ] && docker info >/dev/null 2>&1; then
    say "using the Docker engine"
  else
    bash docker/setup-podman.sh >/dev/null
  fi
  bash docker/build-image.sh
  # Chromium, which the viewer's browser tests drive (tests/integration/test_view.py).
  command -v chromium >/dev/null || { say "installing Chromium"; apt_install chromium; }
  # PostgreSQL's server binaries, for the catalog tests, which start a server of their own.
  # Debian keeps initdb off PATH, under /usr/lib/postgresql/<version>/bin.
  if ! command -v initdb >/dev/null && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "need root to apt-get install postgresql; install it and rerun" >&2; exit 1; }
    say "installing PostgreSQL"
    # The package would also create (and, where services run, start) a system-wide cluster;
    # this drop-in, there during the install only, asks it not to.
    nomain=/etc/postgresql-common/createcluster.d/circuitstore-no-main-cluster.conf
    mkdir -p "${nomain%/*}"
    echo 'create_main_cluster = false' >"$nomain"
    trap 'rm -f "$nomain"' EXIT
    apt_install postgresql
  fi
fi
