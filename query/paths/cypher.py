"""The paths question's statements (see `query/cypher.py` for the rules they follow)."""

from __future__ import annotations

from circuitstore.schema.model import Label as L
from circuitstore.schema.model import RelType as R

# One prompt's whole stored graph in one round trip: its nodes (columns named as
# `subgraph.Node`'s fields), each with its incoming edges as [source, weight, kind] lists:
# lists, not maps, because the driver copies a map item by item (a GPT-2-scale prompt's 50,000
# edges read in ~0.4 s as lists against ~0.8 s as maps, bench_view.py).
PROMPT_GRAPH = f"""
MATCH (n:{L.GRAPH_NODE} {{prompt: $prompt}})
RETURN n.localId AS id, n.kind AS kind, n.layer AS layer, n.pos AS pos, n.feature AS feature,
       n.activation AS activation, n.token AS token, n.tokenId AS token_id, n.value AS value,
       COLLECT {{
         MATCH (s:{L.GRAPH_NODE})-[a:{R.ATTR}]->(n)
         RETURN [s.localId, a.weight, a.kind]
       }} AS inputs
"""

# The share of each node's full |input| its stored edges explain (`inputExplained`; null or NaN
# for nodes that are not targets), by local id: what the full |input| is recovered from.
INPUT_EXPLAINED = f"""
MATCH (n:{L.GRAPH_NODE} {{prompt: $prompt}})
RETURN n.localId AS id, n.inputExplained AS explained
"""
