#!/usr/bin/env bash
# A few questions to the store the quickstart fills with the demo corpus; each is one command
# a user can rerun and vary. Needs NEO4J_PASSWORD (and NEO4J_URI if not the default).
set -euo pipefail
cd "$(dirname "$0")/.."
cs=.venv/bin/circuitstore
first() {  # the first ingested prompt of a task
  $cs query cypher "MATCH (p:Prompt {task: \$task}) RETURN p.key AS key ORDER BY key LIMIT 1" \
    -p "task=$1" --format csv | tail -n 1
}
ioi=$(first ioi)
years=$(first years)
ask() { printf '\n== %s\n$ circuitstore %s\n' "$1" "${*:2}"; $cs "${@:2}"; }

ask "How does an indirect-object prompt reach its answer? (strongest paths into the top logit)" \
  query paths --prompt "$ioi" --top 5
ask "Which tokens and features carry 80% of the influence on a year prompt's answer?" \
  query circuit --prompt "$years" --threshold 0.8
# The layer-2 feature that fires in the most prompts, not counting features that fire only on
# the BOS token (position 0): a hub, driven by many earlier features.
hub=$($cs query cypher "MATCH (f:Feature {layer: 2})-[t:TOP_EXAMPLE]->() WITH f, max(t.pos) AS last WHERE last > 0 RETURN f.name AS name ORDER BY f.nPrompts DESC, f.index LIMIT 1" --format csv | tail -n 1)
ask "Which earlier features drive $hub across the whole corpus?" query drivers "$hub" --top 5
ask "Where does $hub fire most?" query examples "$hub" --top 5
ask "What is $hub? (statistics, logit-lens tokens, neighbours)" query feature "$hub"
