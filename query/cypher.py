"""Every Cypher statement the query side runs: constants and small builders, all parameterised.

Labels and relationship types come from `schema.model`; the few pieces a builder varies (the
direction of a hop, the ranking expression) come from the closed dictionaries below, never from
user text. Each statement that starts from a named feature or prompt returns one row per match
even when it has no neighbours, so "unknown" and "no answers" stay distinguishable.
"""

from __future__ import annotations

from functools import cache

from circuitstore.schema.model import Label as L
from circuitstore.schema.model import RelType as R

TRANSCODER_SETS = f"""
MATCH (s:{L.TRANSCODER_SET})
RETURN s.id AS id, s.nLayers AS nLayers, s.dTranscoder AS dTranscoder, s.model AS model
ORDER BY s.id
"""

# A prompt by the user's key (optionally within one transcoder set), or by its full id.
PROMPT = f"""
CALL () {{
  MATCH (p:{L.PROMPT} {{key: $key}}) RETURN p
  UNION
  MATCH (p:{L.PROMPT} {{id: $key}}) RETURN p
}}
WITH p WHERE $tset IS NULL OR p.transcoderSet = $tset
RETURN p.id AS id, p.key AS key, p.transcoderSet AS transcoderSet, p.text AS text,
       p.tokens AS tokens
LIMIT 5
"""

FEATURES = f"""
UNWIND $ids AS id
OPTIONAL MATCH (f:{L.FEATURE} {{id: id}})
RETURN id, f IS NOT NULL AS found, f.nPrompts AS nPrompts
"""

# Ranking of DRIVES neighbours: the score, which rows qualify, and the sort key.
SCORES = {"total": "d.sum", "mean": "d.sum / d.n"}
SIGN_FILTERS = {"positive": "score > 0", "negative": "score < 0", "abs": "true"}
SIGN_ORDERS = {"positive": "score DESC", "negative": "score ASC", "abs": "abs(score) DESC"}
HOPS = {"drivers": "<-[d:{rel}]-", "targets": "-[d:{rel}]->"}


@cache
def corpus_links(direction: str, order: str, sign: str) -> str:
    """One hop over DRIVES from a global feature, ranked; one row even with no neighbours."""
    hop = HOPS[direction].format(rel=R.DRIVES)
    return f"""
MATCH (f:{L.FEATURE} {{id: $id}})
RETURN COLLECT {{
  MATCH (f){hop}(o:{L.FEATURE})
  WITH o, d, {SCORES[order]} AS score
  WHERE {SIGN_FILTERS[sign]}
  WITH o, d, score ORDER BY {SIGN_ORDERS[sign]} LIMIT $top
  RETURN [o.layer, o.index, d.n, d.sum, d.sumAbs, d.maxAbs]
}} AS rows
"""


PROMPT_HOPS = {"drivers": "<-[a:{rel}]-", "targets": "-[a:{rel}]->"}


@cache
def prompt_links(direction: str) -> str:
    """A feature's occurrences in one prompt (at one position where given), each with its ATTR
    edges in one direction."""
    hop = PROMPT_HOPS[direction].format(rel=R.ATTR)
    return f"""
MATCH (o:{L.OCCURRENCE} {{prompt: $prompt, layer: $layer, feature: $index}})
WHERE $pos IS NULL OR o.pos = $pos
RETURN o.localId AS id, o.pos AS pos, o.activation AS activation,
       COLLECT {{
         MATCH (o){hop}(x:{L.GRAPH_NODE})
         RETURN [x.localId, x.kind, x.layer, x.pos, a.weight, a.kind, x.feature]
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
  RETURN [p.key, t.pos, t.activation, start, p.tokens[start .. t.pos + $window + 1]]
}} AS rows
"""

FEATURE_CARD = f"""
MATCH (f:{L.FEATURE} {{id: $id}})
RETURN properties(f) AS props,
  COLLECT {{
    MATCH (f)<-[v:{R.VIRTUAL_WEIGHT}]-(o:{L.FEATURE})
    WITH o, v ORDER BY abs(v.weight) DESC, o.layer, o.index LIMIT $top
    RETURN [o.layer, o.index, v.weight]
  }} AS virtualIn,
  COLLECT {{
    MATCH (f)-[v:{R.VIRTUAL_WEIGHT}]->(o:{L.FEATURE})
    WITH o, v ORDER BY abs(v.weight) DESC, o.layer, o.index LIMIT $top
    RETURN [o.layer, o.index, v.weight]
  }} AS virtualOut
"""

# One prompt's whole stored graph in one round trip: its nodes, each with its incoming edges.
PROMPT_GRAPH = f"""
MATCH (n:{L.GRAPH_NODE} {{prompt: $prompt}})
RETURN n.localId AS id, n.kind AS kind, n.layer AS layer, n.pos AS pos, n.feature AS feature,
       n.activation AS activation, n.token AS token, n.tokenId AS tokenId, n.value AS value,
       COLLECT {{
         MATCH (s:{L.GRAPH_NODE})-[a:{R.ATTR}]->(n) RETURN [s.localId, a.weight, a.kind]
       }} AS inputs
"""

# Prompts where every feature occurs, scored by the summed peak activations. One pass over the
# rarest feature ($first) through the Occurrence(transcoderSet, layer, feature) index gives its
# prompts with its positions and peak; per prompt, each other feature ($rest) is looked up once
# through Occurrence(prompt, layer, feature), reading its positions and peak in the same seek (no
# separate existence check), and the prompt is kept when all of them were found. Only the `$top`
# best prompts are then joined to :Prompt.
PROMPTS_WITH = f"""
MATCH (o:{L.OCCURRENCE} {{transcoderSet: $tset, layer: $first.layer, feature: $first.index}})
WITH o.prompt AS pid, collect(o.pos) AS head, max(o.activation) AS peak
CALL (pid) {{
  UNWIND $rest AS f
  MATCH (x:{L.OCCURRENCE} {{prompt: pid, layer: f.layer, feature: f.index}})
  WITH f, collect(x.pos) AS positions, max(x.activation) AS peak
  RETURN collect([f.name, positions]) AS tail, sum(peak) AS more, count(*) AS found
}}
WITH pid, head, tail, peak + more AS score WHERE found = size($rest)
ORDER BY score DESC, pid LIMIT $top
MATCH (p:{L.PROMPT} {{id: pid}})
RETURN p.key AS key, p.text AS text, score, [[$first.name, head]] + tail AS positions
ORDER BY score DESC, key
"""

# Put in front of a user's statement to learn, without running it, how the server classes it.
EXPLAIN = "EXPLAIN "
