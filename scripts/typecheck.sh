#!/usr/bin/env bash
# mypy over the installed layout. The top-level folders ingest/, query/ and schema/ install as
# circuitstore.ingest etc.; mypy cannot follow setuptools' editable-install import hook, so we
# give it a tree of symlinks in that shape and check it from there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tree="$root/.cache/typecheck"
rm -rf "$tree" && mkdir -p "$tree/circuitstore"
for entry in "$root"/circuitstore/*; do ln -s "$entry" "$tree/circuitstore/"; done
for pkg in ingest query schema; do ln -s "$root/$pkg" "$tree/circuitstore/$pkg"; done
cd "$tree"
exec "${MYPY:-$root/.venv/bin/mypy}" --config-file "$root/pyproject.toml" --cache-dir "$root/.cache/mypy" -p circuitstore "$@"
