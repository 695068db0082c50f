"""The features question's statements (see `query/cypher.py` for the rules they follow)."""

from __future__ import annotations

from functools import cache

from circuitstore.schema.model import Label as L
from circuitstore.schema.model import RelType as R

# Ranking of DRIVES neighbours: the score, which rows qualify, and the sort key.
SCORES = {"total": "d.sum", "mean": "d.sum / d.n"}
SIGN_FILTERS = {"positive": "score > 0", "negative": "score < 0", "abs": "true"}
SIGN_ORDERS = {"positive": "score DESC", "negative": "score ASC", "abs": "abs(score) DESC"}
HOPS = {"drivers": "<-[d:{rel}]-", "targets": "-[d:{rel}]->"}


@cache
def corpus_links(direction: str, order: str, sign: str) -> str:
    """One hop over DRIVES from a global feature, ranked; one row even with no neighbours. Each
    neighbour is a map named as `records.Link`'s fields."""
    hop = HOPS[direction].format(rel=R.DRIVES)
    return f"""
MATCH (f:{L.FEATURE} {{id: $id}})
RETURN COLLECT {{
  MATCH (f){hop}(o:{L.FEATURE})
  WITH o, d, {SCORES[order]} AS score
  WHERE {SIGN_FILTERS[sign]}
  WITH o, d, score ORDER BY {SIGN_ORDERS[sign]} LIMIT $top
  RETURN {{layer: o.layer, index: o.index, n: d.n, total: d.sum, sum_abs: d.sumAbs,
          max_abs: d.maxAbs, label: o.label}}
}} AS rows
"""


PROMPT_HOPS = {"drivers": "<-[a:{rel}]-", "targets": "-[a:{rel}]->"}


@cache
def prompt_links(direction: str) -> str:
    """A feature's occurrences in one prompt (at one position where given), each with its ATTR
    edges in one direction: the node at the other end and the edge, as one map."""
    hop = PROMPT_HOPS[direction].format(rel=R.ATTR)
    return f"""
MATCH (o:{L.OCCURRENCE} {{prompt: $prompt, layer: $layer, feature: $index}})
WHERE $pos IS NULL OR o.pos = $pos
RETURN o.localId AS id, o.pos AS pos, o.activation AS activation,
       COLLECT {{
         MATCH (o){hop}(x:{L.GRAPH_NODE})
         RETURN {{id: x.localId, kind: x.kind, layer: x.layer, pos: x.pos, feature: x.feature,
                 token_id: x.tokenId, token: x.token, weight: a.weight, edge_kind: a.kind,
                 heads: a.heads, head_weights: a.headWeights, other_heads: a.otherHeads,
                 residual: a.residual}}
       }} AS edges
ORDER BY o.pos
"""


# Where a feature fires most, with a window of tokens around the position.
EXAMPLES = f"""
MATCH (f:{L.FEATURE} {{id: $id}})
RETURN COLLECT {{
  MATCH (f)-[t:{R.TOP_EXAMPLE}]->(p:{L.PROMPT})
  WITH p, t ORDER BY t.activation DESC, p.key LIMIT $top
  WITH p, t, CASE WHEN t.pos < $window THEN 0 ELSE t.pos - $window END AS start
  RETURN {{prompt: p.key, pos: t.pos, activation: t.activation, start: start,
          window: p.tokens[start .. t.pos + $window + 1]}}
}} AS rows
"""

FEATURE_CARD = f"""
MATCH (f:{L.FEATURE} {{id: $id}})
RETURN properties(f) AS props,
  COLLECT {{
    MATCH (f)<-[v:{R.VIRTUAL_WEIGHT}]-(o:{L.FEATURE})
    WITH o, v ORDER BY abs(v.weight) DESC, o.layer, o.index LIMIT $top
    RETURN {{layer: o.layer, index: o.index, weight: v.weight, label: o.label}}
  }} AS virtualIn,
  COLLECT {{
    MATCH (f)-[v:{R.VIRTUAL_WEIGHT}]->(o:{L.FEATURE})
    WITH o, v ORDER BY abs(v.weight) DESC, o.layer, o.index LIMIT $top
    RETURN {{layer: o.layer, index: o.index, weight: v.weight, label: o.label}}
  }} AS virtualOut
"""
