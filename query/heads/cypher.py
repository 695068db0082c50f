"""The heads question's statements (see `query/cypher.py` for the rules they follow)."""

from __future__ import annotations

from circuitstore.schema.model import Label as L
from circuitstore.schema.model import RelType as R

# The attention heads named on one prompt's stored edges (each edge names its strongest few),
# with the weight they carry there, and the edges' absolute sums of their other heads, in one
# pass over the edges (an edge is split where it has `otherHeads`; `heads` is absent where no
# head is named).
PROMPT_HEADS = f"""
MATCH (:{L.GRAPH_NODE} {{prompt: $prompt}})-[a:{R.ATTR}]->()
WHERE a.otherHeads IS NOT NULL
WITH collect(a) AS split, sum(abs(a.otherHeads)) AS other
UNWIND split AS a
UNWIND range(0, size(coalesce(a.heads, [])) - 1) AS i
WITH other, a.heads[i] AS head, a.headWeights[i] AS w
RETURN head, count(*) AS edges, sum(w) AS total, sum(abs(w)) AS sumAbs, other
ORDER BY sumAbs DESC, head
"""

# One stored ATTR edge of a prompt (by its ends' global ids): its ends' positions and the heads
# it names, with their weights (several rows where several edges join the pair).
EDGE_HEADS = f"""
MATCH (s:{L.GRAPH_NODE} {{id: $source}})-[a:{R.ATTR}]->(t:{L.GRAPH_NODE} {{id: $target}})
RETURN s.pos AS source_pos, t.pos AS target_pos, a.weight AS edge_weight, a.heads AS heads,
       a.headWeights AS weights
"""
