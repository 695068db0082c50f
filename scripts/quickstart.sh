#!/usr/bin/env bash
# The main job, from a fresh clone: install what is missing, then `circuitstore demo` (start the
# local Neo4j, apply the schema, ingest a quarter of the demo corpus that ships in the package
# with the demo model and transcoders, answer a few questions, print the Browser address).
# Extra arguments go to `circuitstore ingest` instead, so the real GPT-2 small run is
#   bash scripts/quickstart.sh --model gpt2 --transcoders pchlenski/gpt2-transcoders --prompts FILE
# (needs the HuggingFace hub).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${NEO4J_PASSWORD:?export NEO4J_PASSWORD=<at least 8 characters> first}"

bash scripts/bootstrap.sh
cs=.venv/bin/circuitstore

if [ $# -eq 0 ]; then
  $cs demo
else
  $cs server start
  $cs schema apply
  $cs ingest "$@"
  echo
  $cs server status  # its addresses: the Browser's among them (user neo4j, your NEO4J_PASSWORD)
fi

cat <<TXT

The circuitstore command is .venv/bin/circuitstore; to type it as plain circuitstore, run
  source .venv/bin/activate
TXT
