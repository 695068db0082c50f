"""The QK question's statements (see `query/cypher.py` for the rules they follow).

The (:QKTrace) nodes `circuitstore qk --store` and `ingest --qk-top` write
(`ingest/qkstore/cypher.py`): each read back whole from its own properties, its terms in rank
order, so that a trace reads back equal to the computed one."""

from __future__ import annotations

from circuitstore.schema.model import Label as L

# A trace as a map of its stored properties (named as written), with its prompt's key.
_TRACE = "t {.*} AS trace"

# One prompt's traces (one head's, where given), by head and positions.
PROMPT_TRACES = f"""
MATCH (t:{L.QK_TRACE} {{prompt: $prompt}})
WHERE $layer IS NULL OR (t.layer = $layer AND t.head = $head)
RETURN {_TRACE}
ORDER BY t.layer, t.head, t.queryPos, t.keyPos, t.mode
"""

# Which nodes of `side` (a closed choice: query or key) push one head's scores, summed over
# its traces: each trace's kept marginals of that side whose contributor is a feature
# occurrence (`$pattern`, the kind table's local ids of features), grouped by the feature
# (the id without its position), its positions in one trace summed. `n` counts the traces it
# is kept in, `traces` all of them.
SIDES = {"query": ("queryNodes", "queryValues"), "key": ("keyNodes", "keyValues")}
SIGN_FILTERS = {"positive": "total > 0", "negative": "total < 0", "abs": "true"}
SIGN_ORDERS = {"positive": "total DESC", "negative": "total ASC", "abs": "abs(total) DESC"}


def head_drivers(side: str, sign: str) -> str:
    """The features whose marginals on `side` most raise (`positive`), lower (`negative`) or
    move (`abs`) one head's scores over the stored traces; one row even with no traces."""
    nodes, values = SIDES[side]
    return f"""
MATCH (t:{L.QK_TRACE} {{transcoderSet: $tset, layer: $layer, head: $head}})
WITH collect(t) AS traces
RETURN size(traces) AS traces, COLLECT {{
  UNWIND traces AS t
  UNWIND range(0, size(t.{nodes}) - 1) AS i
  WITH t, t.{nodes}[i] AS node, t.{values}[i] AS value
  WHERE node =~ $pattern
  WITH t, split(node, $at)[0] AS feature, sum(value) AS value
  WITH feature, count(*) AS n, sum(value) AS total, max(abs(value)) AS maxAbs
  WHERE {SIGN_FILTERS[sign]}
  WITH feature, n, total, maxAbs ORDER BY {SIGN_ORDERS[sign]}, feature LIMIT $top
  RETURN {{feature: feature, n: n, total: total, mean: total / n, max_abs: maxAbs}}
}} AS rows
"""
