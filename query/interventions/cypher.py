"""The interventions question's statements (see `query/cypher.py` for the rules they follow).

The (:Intervention) nodes `circuitstore verify` writes (`ingest/intervene/cypher.py`), each as a
map named as `records.InterventionInfo`'s fields, its features sorted; ordered by prompt key,
kind, features and scale (stored interventions carry no time worth ordering by)."""

from __future__ import annotations

from circuitstore.schema.model import Label as L
from circuitstore.schema.model import RelType as R

# What one intervention returns, and the order rows come in.
_ROW = """
WITH i, COLLECT { UNWIND i.features AS x WITH x ORDER BY x RETURN x } AS features
ORDER BY i.promptKey, i.kind, features, i.scale
LIMIT $top
RETURN {prompt: i.promptKey, kind: i.kind, features: features, scale: i.scale,
        predicted_diff: i.predictedDiff, observed_diff: i.observedDiff, flips: i.flips,
        top_token: i.topToken} AS row
"""

# The interventions of one transcoder set (or all), of one prompt's id where given.
INTERVENTIONS = f"""
MATCH (i:{L.INTERVENTION})
WHERE ($prompt IS NULL OR i.prompt = $prompt) AND ($tset IS NULL OR i.transcoderSet = $tset)
{_ROW}
"""

# The interventions on one global feature (of one prompt's id, at one position's node id
# `$node`, where given): one row even when there are none, so an unknown feature shows.
FEATURE_INTERVENTIONS = f"""
MATCH (f:{L.FEATURE} {{id: $feature}})
RETURN COLLECT {{
  MATCH (i:{L.INTERVENTION})-[:{R.ON_FEATURE}]->(f)
  WHERE ($prompt IS NULL OR i.prompt = $prompt) AND ($node IS NULL OR $node IN i.features)
  {_ROW}
}} AS rows
"""
