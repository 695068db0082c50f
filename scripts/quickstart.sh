#!/usr/bin/env bash
# The main job, from a fresh clone: install what is missing, start a local Neo4j, apply the
# schema, ingest the shipped demo corpus with the shipped demo model and transcoders, and answer
# a few questions. Extra arguments go to `circuitstore ingest`, so the real GPT-2 small run is
#   bash scripts/quickstart.sh --model gpt2 --transcoders pchlenski/gpt2-transcoders --prompts FILE
# (needs the HuggingFace hub).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${NEO4J_PASSWORD:?export NEO4J_PASSWORD=<at least 8 characters> first}"

bash scripts/bootstrap.sh
cs=.venv/bin/circuitstore
$cs server start
$cs schema apply

if [ $# -gt 0 ]; then
  $cs ingest "$@"
else
  # A deterministic quarter of the demo corpus (about 200 prompts, every task) keeps this to a
  # few minutes; the same command without --shard ingests all 800 into the same store.
  $cs ingest --model demo/weights/model --transcoders demo/weights/transcoders \
    --prompts demo/corpus.jsonl --run demo --shard 0/4
  bash scripts/demo-questions.sh
fi

http_port=${CIRCUITSTORE_HTTP_PORT:-7474}
cat <<TXT

Neo4j Browser: http://127.0.0.1:${http_port}/browser/  (user neo4j, your NEO4J_PASSWORD)
Paste, for the strongest corpus-wide drivers of every layer-1 feature:
  MATCH (s:Feature)-[d:DRIVES]->(t:Feature {layer: 1})
  RETURN s.name, t.name, d.sum, d.n ORDER BY abs(d.sum) DESC LIMIT 25
More queries: query/cookbook.cypher.  Stop the server: .venv/bin/circuitstore server stop
TXT
